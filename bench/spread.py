"""How evenly a server spreads keep-alive connections over its workers (issue 17).

    bench/spread.py [--servers ferrocorn,granian,uvicorn,gunicorn] [--workers 8,2]
    bench/spread.py --cost            # accept path: server CPU per connection
    bench/spread.py --rebalance       # a skew evened out by --max-connection-age

The spread run, per server and worker count: start the server with N workers (the app
answers its worker's pid, bench/spread_app.py), put it under background load (a
separate process keeps a few keep-alive connections busy), then open 400 fresh
keep-alive connections, 20 at a time, each asking which worker answered and staying
open until all 400 have asked. Printed: the connections per worker, busiest first,
and the busiest worker's share over the fair share (1.00 is perfectly even).

tests/test_spread.py uses `measure_spread` and `Background` from here. Peers come from
bench/.venv (bench/run.sh installs them) or --peers-bin.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
FERROCORN_PYTHON = os.environ.get("FERROCORN_PYTHON", str(ROOT / ".venv" / "bin" / "python"))
HOST = "127.0.0.1"
APP = "spread_app:app"


# -- the clients ------------------------------------------------------------------------


def _request(path: str = "/", close: bool = False) -> bytes:
    extra = "connection: close\r\n" if close else ""
    return f"GET {path} HTTP/1.1\r\nhost: bench\r\n{extra}\r\n".encode()


async def _read_response(reader: asyncio.StreamReader) -> tuple[bytes, bool]:
    """The body and whether the server asked to close (a small Content-Length body)."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    close = False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"connection" and value.strip().lower() == b"close":
            close = True
    return await reader.readexactly(length), close


async def _open_fresh(port: int, fresh: int, concurrency: int) -> list[int]:
    """Open `fresh` keep-alive connections, `concurrency` at a time; each asks once
    which worker holds it and stays open until all have asked. Returns the pids."""
    gate = asyncio.Semaphore(concurrency)
    writers = []
    pids: list[int] = []

    async def one() -> None:
        async with gate:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), 20)
            writers.append(writer)
            writer.write(_request())
            body, _ = await asyncio.wait_for(_read_response(reader), 20)
            pids.append(int(body))

    try:
        await asyncio.gather(*(one() for _ in range(fresh)))
    finally:
        for w in writers:
            w.close()
    return pids


def measure_spread(port: int, fresh: int = 400, concurrency: int = 20) -> list[int]:
    """The pid that answered each of `fresh` new keep-alive connections."""
    return asyncio.run(_open_fresh(port, fresh, concurrency))


def distribution(pids: list[int], workers: int) -> list[int]:
    """Connections per worker, busiest first, with zeros for workers that got none."""
    counts = sorted(collections.Counter(pids).values(), reverse=True)
    return counts + [0] * max(0, workers - len(counts))


def max_over_fair(counts: list[int]) -> float:
    return max(counts) / (sum(counts) / len(counts))


class Background:
    """A separate process whose threads each keep one keep-alive connection busy, so
    the workers' event loops are loaded while the fresh connections arrive."""

    def __init__(self, port: int, connections: int) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--hammer", str(port), str(connections)],
            stdout=subprocess.PIPE,
        )
        # It prints one line once every connection has answered once.
        line = self.proc.stdout.readline()
        if not line.startswith(b"ready"):
            raise RuntimeError("background load did not start")

    def stop(self) -> int:
        """Stop it; returns the requests it got answered."""
        self.proc.send_signal(signal.SIGINT)
        out, _ = self.proc.communicate(timeout=15)
        return int(out.split()[-1]) if out.split() else 0

    def __enter__(self) -> Background:
        return self

    def __exit__(self, *exc) -> None:
        if self.proc.poll() is None:
            self.stop()


def _hammer(port: int, connections: int) -> None:
    """--hammer: `connections` threads sending requests back to back until SIGINT."""
    stop = threading.Event()
    done = [0] * connections
    started = threading.Barrier(connections + 1)

    def client(i: int) -> None:
        sock = socket.create_connection((HOST, port))
        f = sock.makefile("rb")
        first = True
        while not stop.is_set():
            sock.sendall(_request())
            length = 0
            while (line := f.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            f.read(length)
            done[i] += 1
            if first:
                first = False
                started.wait()
        sock.close()

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(connections)]
    for t in threads:
        t.start()
    started.wait()
    print("ready", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        while True:
            time.sleep(1)
    stop.set()
    for t in threads:
        t.join(timeout=5)
    print(sum(done), flush=True)


# -- the servers ------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def server_command(server: str, port: int, workers: int, peers: Path, extra=()) -> list[str]:
    w = str(workers)
    if server == "ferrocorn-unbalanced":
        return server_command("ferrocorn", port, workers, peers, ["--accept-balance", "off"])
    if server == "ferrocorn":
        return [
            FERROCORN_PYTHON, "-m", "ferrocorn", APP, "--app-dir", str(HERE),
            "--host", HOST, "--port", str(port), "--workers", w, "--no-access-log",
            "--loop", "uvloop", *extra,
        ]  # fmt: skip
    if server == "granian":
        return [
            str(peers / "granian"), "--interface", "asgi", "--host", HOST, "--port", str(port),
            "--workers", w, "--no-ws", "--log-level", "warning", "--loop", "uvloop", APP,
        ]  # fmt: skip
    if server == "uvicorn":
        return [
            str(peers / "uvicorn"), APP, "--host", HOST, "--port", str(port), "--workers", w,
            "--no-access-log", "--log-level", "warning", "--loop", "uvloop",
        ]  # fmt: skip
    if server == "gunicorn":
        return [
            str(peers / "gunicorn"), "-k", "uvicorn_worker.UvicornWorker", "-w", w,
            "-b", f"{HOST}:{port}", "--log-level", "warning", APP,
        ]  # fmt: skip
    raise ValueError(server)


def children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime + stime
    return total / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def running(server: str, workers: int, peers: Path, extra=()):
    port = free_port()
    proc = subprocess.Popen(
        server_command(server, port, workers, peers, extra),
        cwd=HERE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                # Ready when every worker answers (each connection lands somewhere).
                pids = set(measure_spread(port, fresh=workers * 8, concurrency=workers * 8))
                if len(pids) >= workers or time.monotonic() > deadline - 50:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{server} did not start")
            time.sleep(0.3)
        yield port, proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def spread_row(server: str, workers: int, peers: Path, background: int) -> str:
    with running(server, workers, peers) as (port, _), Background(port, background):
        time.sleep(0.5)
        counts = distribution(measure_spread(port), workers)
    return f"| {server} | {workers} | {max_over_fair(counts):.2f}x | `{counts}` |"


# -- the accept path's cost -------------------------------------------------------------


def cost_row(
    label: str, extra: list[str], peers: Path, connections: int = 2000, workers: int = 8
) -> str:
    """Server CPU (all processes) per connection that sends one request and closes."""

    async def churn(port: int) -> None:
        gate = asyncio.Semaphore(8)

        async def one() -> None:
            async with gate:
                reader, writer = await asyncio.open_connection(HOST, port)
                writer.write(_request(close=True))
                await _read_response(reader)
                writer.close()

        await asyncio.gather(*(one() for _ in range(connections)))

    with running("ferrocorn", workers, peers, extra) as (port, proc):
        time.sleep(1)
        pids = [proc.pid, *children(proc.pid)]
        before = cpu_seconds(pids)
        started = time.monotonic()
        asyncio.run(churn(port))
        took = time.monotonic() - started
        used = cpu_seconds(pids) - before
    return (
        f"| {label} | {workers} | {connections} | {used / connections * 1e6:.0f} µs "
        f"| {connections / took:.0f}/s |"
    )


# -- rebalancing with --max-connection-age ----------------------------------------------


async def _steady_clients(port: int, clients: int, seconds: float, marks: dict) -> None:
    """`clients` connections, each sending a request every 100 ms and reconnecting when
    the server says `connection: close`; marks[t] = the distribution at time t."""
    latest: dict[int, int] = {}
    start = time.monotonic()

    async def one(i: int) -> None:
        while time.monotonic() - start < seconds:
            reader, writer = await asyncio.open_connection(HOST, port)
            try:
                while time.monotonic() - start < seconds:
                    writer.write(_request())
                    body, close = await _read_response(reader)
                    latest[i] = int(body)
                    if close:
                        break
                    await asyncio.sleep(0.1)
            finally:
                writer.close()

    async def sampler() -> None:
        for t in sorted(marks):
            await asyncio.sleep(max(0.0, start + t - time.monotonic()))
            counts = collections.Counter(latest.values())
            marks[t] = counts

    await asyncio.gather(sampler(), *(one(i) for i in range(clients)))


def rebalance(peers: Path, age: float | None) -> None:
    """Two workers with 200 steady clients, then TTIN adds a third (it starts with
    none): the distribution before, right after, and after an age cycle. Without
    --max-connection-age the new worker only gets connections that are opened anew."""
    extra = ["--max-connection-age", str(age), "--max-connection-age-jitter", "1"] if age else []
    with running("ferrocorn", 2, peers, extra) as (port, proc):
        marks = {1.5: None, 4.0: None, 11.0: None}

        def add_worker() -> None:
            time.sleep(2.0)
            os.kill(proc.pid, signal.SIGTTIN)

        threading.Thread(target=add_worker, daemon=True).start()
        asyncio.run(_steady_clients(port, 200, max(marks) + 0.5, marks))
    label = f"--max-connection-age {age:g}" if age else "no --max-connection-age"
    for t, counts in sorted(marks.items()):
        workers = 2 if t < 2.0 else 3
        spread = distribution(list(counts.elements()), workers)
        print(f"{label}, t={t:4.1f}s ({workers} workers): {spread}")


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--hammer":
        _hammer(int(sys.argv[2]), int(sys.argv[3]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--servers",
        default="ferrocorn,ferrocorn-unbalanced,granian,uvicorn,gunicorn",
        help="ferrocorn-unbalanced: --accept-balance off",
    )
    parser.add_argument("--workers", default="8,2")
    parser.add_argument("--background", type=int, default=0, help="default: 4 per worker")
    parser.add_argument("--peers-bin", type=Path, default=HERE / ".venv" / "bin")
    parser.add_argument("--cost", action="store_true")
    parser.add_argument("--rebalance", action="store_true")
    args = parser.parse_args()
    if args.cost:
        print("| accepting | workers | connections | server CPU per connection | rate |")
        print("|---|---|---|---|---|")
        off = ["--accept-balance", "off"]
        for workers in (1, 8):
            for label, extra in (("balanced", []), ("--accept-balance off", off)):
                print(cost_row(label, extra, args.peers_bin, 3000, workers), flush=True)
        return
    if args.rebalance:
        rebalance(args.peers_bin, None)
        rebalance(args.peers_bin, 4.0)
        return
    print("| server | workers | busiest / fair | connections per worker |")
    print("|---|---|---|---|")
    for workers in (int(w) for w in args.workers.split(",")):
        for server in args.servers.split(","):
            if not server.startswith("ferrocorn") and not (args.peers_bin / server).exists():
                print(f"| {server} | {workers} | not installed | |")
                continue
            background = args.background or 4 * workers
            print(spread_row(server, workers, args.peers_bin, background), flush=True)


if __name__ == "__main__":
    main()
