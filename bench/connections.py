"""Memory per connection at scale, side by side: N idle keep-alive HTTP/1.1 connections
(one request each, then silent) and, separately, N idle WebSockets, held open on ONE
worker; the RSS of the server's process tree before and after gives KiB per connection.
Short wrk runs next to them, compared with the same runs without them, show whether
held connections slow active clients down (p99).

    bench/connections.py                              # 10,000 of each, all servers
    bench/connections.py --connections 2000 --servers ferrocorn

Each (server, kind) gets a fresh server (one worker, uvloop, keep-alive and WebSocket
ping timers long enough not to fire during the run). Steps: warm-up wrk run; RSS; the
wrk runs without held connections (`--rounds`, 3: the median p99); open N connections
(a request or a WebSocket handshake each, answered, then idle); RSS; the same wrk runs
again with them held; close them; RSS once the server has let them go and then
`--after-close` seconds more (12 by default, for every server alike: ferrocorn gives
freed heap back to the kernel every 10 s by default, and a read taken before that shows
memory it no longer uses). The file descriptor limit is raised to its hard limit here,
and the servers inherit it. The client is asyncio with raw non-blocking sockets, so
holding 10,000 of them costs this process little.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import time

from load import run_wrk
from servers import FERROCORN_PYTHON, HOST, PEERS_BIN, ROOT

from memory import free_port, tree_rss_mb, wait_ready

SERVERS = ("ferrocorn", "granian", "uvicorn")
KINDS = ("http", "ws")
APP = "examples.ws_echo:app"  # "ok" for plain HTTP, an echo for WebSockets
IDLE = "600"  # seconds: keep-alive and WebSocket ping timers that won't fire in a run
CONNECT_AT_ONCE = 200  # handshakes in flight, well under every listen backlog
WRK_SECONDS = 5
WRK_CONNECTIONS = 16


def server_command(server: str, port: int) -> list[str]:
    if server == "ferrocorn":
        return [
            FERROCORN_PYTHON, "-m", "ferrocorn", APP, "--host", HOST, "--port", str(port),
            "--workers", "1", "--no-access-log", "--loop", "uvloop",
            "--timeout-keep-alive", IDLE, "--ws-ping-interval", "0",
        ]  # fmt: skip
    if server == "granian":
        # --backpressure: granian admits at most this many connections per worker at a
        # time (default backlog/workers, 1024); the rest would wait in the backlog.
        return [
            str(PEERS_BIN / "granian"), "--interface", "asgi", "--host", HOST,
            "--port", str(port), "--workers", "1", "--log-level", "warning",
            "--loop", "uvloop", "--backlog", "4096", "--backpressure", "30000", APP,
        ]  # fmt: skip
    if server == "uvicorn":
        return [
            str(PEERS_BIN / "uvicorn"), APP, "--host", HOST, "--port", str(port),
            "--workers", "1", "--no-access-log", "--log-level", "warning",
            "--loop", "uvloop", "--http", "httptools", "--timeout-keep-alive", IDLE,
            "--ws-ping-interval", IDLE, "--ws-ping-timeout", IDLE,
        ]  # fmt: skip
    raise ValueError(server)


def raise_fd_limit() -> int:
    """Soft RLIMIT_NOFILE up to the hard limit, for this process and its children."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def request_for(kind: str, port: int) -> bytes:
    if kind == "http":
        return f"GET / HTTP/1.1\r\nHost: {HOST}:{port}\r\n\r\n".encode()
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET / HTTP/1.1\r\nHost: {HOST}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


def answered(kind: str, answer: bytes) -> bool:
    """Whether the whole answer is in: "ok" ends a plain one (or the last chunk, if the
    server chunks it); a 101 ends with its head."""
    if kind == "http":
        return answer.endswith((b"ok", b"\r\n0\r\n\r\n"))
    return b"\r\n\r\n" in answer


async def open_one(kind: str, port: int, gate: asyncio.Semaphore) -> socket.socket:
    """One connection that made its request (or handshake) and got the whole answer."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    async with gate:
        try:
            await loop.sock_connect(sock, (HOST, port))
            await loop.sock_sendall(sock, request_for(kind, port))
            answer = b""
            while not answered(kind, answer):
                chunk = await loop.sock_recv(sock, 4096)
                if not chunk:
                    raise ConnectionError(f"closed after {answer[:60]!r}")
                answer += chunk
            status = b" 200 " if kind == "http" else b" 101 "
            if status not in answer.split(b"\r\n", 1)[0]:
                raise ConnectionError(f"unexpected answer {answer[:60]!r}")
        except BaseException:
            sock.close()
            raise
    return sock


async def open_many(kind: str, port: int, n: int) -> list[socket.socket]:
    gate = asyncio.Semaphore(CONNECT_AT_ONCE)
    results = await asyncio.gather(
        *(open_one(kind, port, gate) for _ in range(n)), return_exceptions=True
    )
    socks = [r for r in results if isinstance(r, socket.socket)]
    failures = [r for r in results if not isinstance(r, socket.socket)]
    if failures:
        for s in socks:
            s.close()
        raise RuntimeError(f"{len(failures)} of {n} connections failed, e.g. {failures[0]!r}")
    return socks


def settle_rss(pid: int, seconds: float = 1.0) -> float:
    """RSS (MB) once it stops moving for a moment (the server may still be finishing
    its last handshakes when the client has its answers)."""
    last = tree_rss_mb(pid)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        time.sleep(seconds)
        now = tree_rss_mb(pid)
        if abs(now - last) < 0.2:
            return now
        last = now
    return last


def connected_count(port: int) -> int:
    """Established TCP connections on the server's port (from the kernel's table)."""
    out = subprocess.run(
        ["ss", "-Htn", "state", "established", f"( sport = :{port} )"],
        capture_output=True, text=True,
    ).stdout  # fmt: skip
    return len(out.splitlines())


def median_run(url: str, rounds: int) -> dict:
    """`rounds` wrk runs: the median p99 and req/s, the errors summed. One run's p99,
    under a millisecond, moves by 2x from run to run on a 2-core machine."""
    runs = [run_wrk(url, WRK_SECONDS, WRK_CONNECTIONS, None) for _ in range(rounds)]
    return {
        "p99_ms": statistics.median(r["p99_ms"] for r in runs),
        "rps": statistics.median(r["rps"] for r in runs),
        "errors": sum(r["errors"] for r in runs),
    }


def measure(server: str, kind: str, n: int, rounds: int, after_close: float) -> dict:
    port = free_port()
    proc = subprocess.Popen(
        server_command(server, port), cwd=ROOT, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://{HOST}:{port}/"
    try:
        wait_ready(port, "/", False, proc)
        run_wrk(url, 2, WRK_CONNECTIONS, None)  # warm-up
        base = median_run(url, rounds)
        before = settle_rss(proc.pid)
        started = time.monotonic()
        socks = asyncio.run(open_many(kind, port, n))
        opened_in = time.monotonic() - started
        print(f"  {server}: {n} {kind} connections open in {opened_in:.1f} s", file=sys.stderr)
        held_rss = settle_rss(proc.pid)
        held = median_run(url, rounds)
        established = connected_count(port)
        if established < n:
            raise RuntimeError(f"only {established} of {n} connections still open on the server")
        for s in socks:
            s.close()
        deadline = time.monotonic() + 15
        while connected_count(port) and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(after_close)
        released = settle_rss(proc.pid)
        return {
            "server": server, "kind": kind, "n": n, "opened_in": opened_in,
            "before": before, "held": held_rss, "released": released,
            "kib_per_conn": (held_rss - before) * 1e6 / 1024 / n,
            "p99_base": base["p99_ms"], "p99_held": held["p99_ms"],
            "rps_base": base["rps"], "rps_held": held["rps"],
            "errors": base["errors"] + held["errors"],
        }  # fmt: skip
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--connections", type=int, default=10_000)
    p.add_argument("--servers", default=",".join(SERVERS))
    p.add_argument("--kinds", default=",".join(KINDS))
    p.add_argument("--rounds", type=int, default=3, help="wrk runs without and with (median p99)")
    p.add_argument(
        "--after-close", type=float, default=12.0,
        help="seconds to wait once the server closed them before reading RSS after close",
    )  # fmt: skip
    args = p.parse_args()
    limit = raise_fd_limit()
    if limit < args.connections + 200:
        raise SystemExit(f"the hard fd limit ({limit}) is too low for {args.connections}")
    print(
        "| server | held | RSS before MB | RSS held MB | KiB per connection | RSS after close MB "
        "| wrk p99 ms without / with | req/s without / with | p99 ratio |\n"
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
        flush=True,
    )
    failed = False
    for kind in args.kinds.split(","):
        for server in args.servers.split(","):
            try:
                r = measure(server, kind, args.connections, args.rounds, args.after_close)
            except (RuntimeError, subprocess.SubprocessError, OSError) as e:
                print(f"| {server} | {args.connections} {kind} | failed: {e} |||||||", flush=True)
                failed = True
                continue
            held = f"{r['n']:,} {'WebSockets' if kind == 'ws' else 'keep-alive'}"
            print(
                f"| {server} | {held} | {r['before']:.1f} | {r['held']:.1f} "
                f"| {r['kib_per_conn']:.1f} | {r['released']:.1f} "
                f"| {r['p99_base']:.2f} / {r['p99_held']:.2f} "
                f"| {r['rps_base']:.0f} / {r['rps_held']:.0f} "
                f"| {r['p99_held'] / r['p99_base']:.2f}x |",
                flush=True,
            )
            failed |= bool(r["errors"])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
