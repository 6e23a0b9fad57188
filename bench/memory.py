"""Memory growth under sustained load, side by side: MB of RSS gained per million
requests by one worker, after a warm-up, for several workloads, event loops and servers.

    bench/memory.py                                   # every workload, server and loop
    bench/memory.py --requests 10000000 --max-seconds 900     # the issue #14 run
    bench/memory.py --servers ferrocorn,ferrocorn-notrim --workloads hello --loops uvloop

Each (server, loop, workload) gets a fresh server with one worker. A warm-up of
--warmup-seconds lets the allocators' pools and the caches settle; then the load tool
runs in slices of --slice-seconds until --requests were served (or --max-seconds
passed), and the RSS of the server's whole process tree (master and worker: the master
is flat, so growth is the worker's) is read after every slice. Two figures per run:
- growth: (RSS after - RSS after warm-up) per million requests served;
- slope: the least-squares slope of RSS over requests served, over every slice, per
  million. A server that trims its heap now and then (ferrocorn) has a sawtooth RSS,
  so growth depends on where the last slice ends; the slope doesn't.
- settled growth: the same with both RSS reads taken after --settle-seconds without
  load (longer than ferrocorn's --malloc-trim-interval), so what is compared is the
  memory a server keeps, not where its sawtooth was; the target applies to it.
- first half / second half: the settled growth over each half of the requests (one
  more settled read, without load, once half were served). A leak grows as much in the
  second half as in the first; memory that is still settling (allocator pools, caches
  reaching their size) grows less and less.

Workloads: hello (wrk GET), fastapi (wrk GET /json), echo (wrk POST of 10 KB), h2
(h2load over h2c, 10 streams per connection), ws (WebSocket echo of 32 bytes with
bench/tools' wsload), tls (wrk GET over HTTPS, a self-signed certificate made with the
openssl command). uvicorn has no HTTP/2, so it has no h2 row.

Servers: ferrocorn (run by $FERROCORN_PYTHON, default the project's .venv), ferrocorn-notrim
(the same with --malloc-trim-interval 0, the behaviour before issue #14), granian and
uvicorn (bench/.venv, made by bench/run.sh). The exit status is 1 if a run had errors or
a ferrocorn run grew by more than --target MB per million.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from lifecycle import h2_request
from servers import FERROCORN_PYTHON, HERE, HOST, PEERS_BIN, ROOT, TOOLS_BIN, build_tools

SERVERS = ("ferrocorn", "ferrocorn-notrim", "granian", "uvicorn")
LOOPS = ("uvloop", "asyncio")
CONNECTIONS = 64
H2_STREAMS = 10


@dataclass(frozen=True)
class Workload:
    app: str
    path: str
    tool: str  # wrk, h2load or wsload
    script: str | None = None  # a wrk Lua script in bench/
    tls: bool = False


WORKLOADS = {
    "hello": Workload("examples.hello:app", "/", "wrk"),
    "fastapi": Workload("examples.fastapi_app:app", "/json", "wrk"),
    "echo": Workload("examples.echo:app", "/", "wrk", "post10k.lua"),
    "h2": Workload("examples.hello:app", "/", "h2load"),
    "ws": Workload("examples.ws_echo:app", "/", "wsload"),
    "tls": Workload("examples.hello:app", "/", "wrk", tls=True),
}


def serves(server: str, workload: str) -> bool:
    return not (server == "uvicorn" and workload == "h2")


def server_command(server: str, loop: str, workload: str, port: int, cert: Path) -> list[str]:
    """One worker, no access log, the given event loop; TLS and HTTP/2 as the workload
    needs them."""
    w = WORKLOADS[workload]
    key = cert.with_suffix(".key")
    if server.startswith("ferrocorn"):
        cmd = [
            FERROCORN_PYTHON, "-m", "ferrocorn", w.app, "--host", HOST, "--port", str(port),
            "--workers", "1", "--no-access-log", "--loop", loop,
        ]  # fmt: skip
        if server == "ferrocorn-notrim":
            cmd += ["--malloc-trim-interval", "0"]
        if w.tls:
            cmd += ["--ssl-keyfile", str(key), "--ssl-certfile", str(cert)]
        return cmd
    if server == "granian":
        cmd = [
            str(PEERS_BIN / "granian"), "--interface", "asgi", "--host", HOST,
            "--port", str(port), "--workers", "1", "--log-level", "warning", "--loop", loop,
        ]  # fmt: skip
        cmd += {"ws": [], "h2": ["--no-ws", "--http", "2"]}.get(workload, ["--no-ws"])
        if w.tls:
            cmd += ["--ssl-keyfile", str(key), "--ssl-certificate", str(cert)]
        return [*cmd, w.app]
    if server == "uvicorn":
        cmd = [
            str(PEERS_BIN / "uvicorn"), w.app, "--host", HOST, "--port", str(port),
            "--workers", "1", "--no-access-log", "--log-level", "warning", "--loop", loop,
            "--http", "httptools",
        ]  # fmt: skip
        if w.tls:
            cmd += ["--ssl-keyfile", str(key), "--ssl-certfile", str(cert)]
        return cmd
    raise ValueError(server)


def tree_rss_mb(root: int) -> float:
    """RSS of `root` and all its descendants, from /proc."""
    parents: dict[int, int] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            rss[int(entry)] = int(Path(f"/proc/{entry}/statm").read_text().split()[1])
            parents[int(entry)] = int(stat[1])
        except (OSError, IndexError, ValueError):
            continue
    tree, grew = {root}, True
    while grew:
        new = {pid for pid, ppid in parents.items() if ppid in tree} - tree
        tree |= new
        grew = bool(new)
    return sum(rss.get(pid, 0) for pid in tree) * os.sysconf("SC_PAGE_SIZE") / 1e6


def run_load(workload: str, port: int, seconds: int) -> tuple[int, int]:
    """(requests, errors) of one slice of load."""
    w = WORKLOADS[workload]
    scheme = "https" if w.tls else "http"
    url = f"{scheme}://{HOST}:{port}{w.path}"
    if w.tool == "wrk":
        cmd = ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{seconds}s"]
        if w.script:
            cmd += ["-s", str(HERE / w.script)]
        out = subprocess.run([*cmd, url], capture_output=True, text=True, check=True).stdout
        requests = int(re.search(r"(\d+) requests in", out).group(1))
        errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
        non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        return requests, errors + (int(non2xx.group(1)) if non2xx else 0)
    if w.tool == "h2load":
        cmd = ["h2load", f"-c{CONNECTIONS}", f"-m{H2_STREAMS}", "-t1", f"-D{seconds}", url]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        done = re.search(r"(\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored", out)
        codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
        bad = sum(int(codes.group(i)) for i in (2, 3, 4))
        return int(done.group(2)), int(done.group(3)) + int(done.group(4)) + bad
    cmd = [str(TOOLS_BIN / "wsload"), f"{HOST}:{port}", w.path, str(CONNECTIONS), str(seconds)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return int(re.search(r'"round_trips":\s*(\d+)', out).group(1)), 0


def wait_ready(
    port: int, path: str, tls: bool, proc: subprocess.Popen, http2: bool = False
) -> None:
    """Until the server answers a request for the workload's path (or gives up after 30
    s: FastAPI's app answers 404 on "/", which urlopen raises). `http2`: ask over
    h2c by prior knowledge, as the h2 workload's load does (granian `--http 2` speaks
    nothing else)."""
    import ssl

    context = ssl._create_unverified_context() if tls else None
    url = f"{'https' if tls else 'http'}://{HOST}:{port}{path}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        with contextlib.suppress(OSError):
            if http2:
                h2_request(port, path)
            else:
                urllib.request.urlopen(url, timeout=1, context=context).close()
            return
        time.sleep(0.1)
    raise RuntimeError("server not ready after 30 s")


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def per_million(mb: float, requests: int) -> float:
    """MB gained per million requests served."""
    return mb / requests * 1e6 if requests else float("nan")


def slope(points: list[tuple[int, float]]) -> float:
    """Least-squares slope of RSS (MB) over requests served, in MB per million."""
    n = len(points)
    if n < 2:
        return float("nan")
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    sxy = sum((x - mx) * (y - my) for x, y in points)
    return sxy / sxx * 1e6 if sxx else float("nan")


def measure(server: str, loop: str, workload: str, args, cert: Path) -> dict:
    port = free_port()
    cmd = server_command(server, loop, workload, port, cert)
    proc = subprocess.Popen(
        cmd, cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        w = WORKLOADS[workload]
        wait_ready(port, w.path, w.tls, proc, http2=workload == "h2")
        warm, errors = run_load(workload, port, args.warmup_seconds)
        time.sleep(args.settle_seconds)
        settled_before = tree_rss_mb(proc.pid)
        before = settled_before
        points = [(0, before)]
        served = 0
        start = time.monotonic()
        half = None  # (requests served, settled RSS) once half the requests were served
        while served < args.requests and time.monotonic() - start < args.max_seconds:
            n, e = run_load(workload, port, args.slice_seconds)
            served, errors = served + n, errors + e
            points.append((served, tree_rss_mb(proc.pid)))
            if half is None and served >= args.requests / 2:
                time.sleep(args.settle_seconds)
                half = (served, tree_rss_mb(proc.pid))
        after = points[-1][1]
        time.sleep(args.settle_seconds)
        settled_after = tree_rss_mb(proc.pid)

        first_half = second_half = float("nan")
        if half is not None:
            first_half = per_million(half[1] - settled_before, half[0])
            second_half = per_million(settled_after - half[1], served - half[0])
        return {
            "server": server, "loop": loop, "workload": workload, "warmup": warm,
            "requests": served, "seconds": time.monotonic() - start, "errors": errors,
            "before": before, "after": after,
            "growth": per_million(after - before, served),
            "slope": slope(points),
            "settled": per_million(settled_after - settled_before, served),
            "first_half": first_half, "second_half": second_half,
        }  # fmt: skip
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def make_cert(directory: Path) -> Path:
    cert = directory / "bench.crt"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=127.0.0.1", "-keyout", str(cert.with_suffix(".key")), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert


def names(text: str, known) -> list[str]:
    chosen = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in chosen if n not in known]
    if unknown:
        raise SystemExit(f"unknown: {', '.join(unknown)} (known: {', '.join(known)})")
    return chosen


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--requests", type=int, default=1_000_000, help="per run, after warm-up")
    p.add_argument("--max-seconds", type=float, default=180, help="per run, cap on --requests")
    p.add_argument("--warmup-seconds", type=int, default=5)
    p.add_argument("--slice-seconds", type=int, default=5)
    p.add_argument(
        "--settle-seconds", type=float, default=11,
        help="idle wait before the settled RSS reads (longer than ferrocorn's trim period)",
    )  # fmt: skip
    p.add_argument("--servers", default="ferrocorn,granian,uvicorn")
    p.add_argument("--loops", default=",".join(LOOPS))
    p.add_argument("--workloads", default=",".join(WORKLOADS))
    p.add_argument("--target", type=float, default=0.05, help="MB per million (issue #14)")
    args = p.parse_args()
    servers = names(args.servers, SERVERS)
    loops = names(args.loops, LOOPS)
    workloads = names(args.workloads, WORKLOADS)
    if "ws" in workloads:
        build_tools()
    print(
        "| workload | server | loop | requests | RSS after warm-up MB | RSS after MB "
        "| growth MB/M | slope MB/M | settled growth MB/M | first half | second half "
        "| errors |\n"
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        flush=True,
    )
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        cert = make_cert(Path(tmp)) if "tls" in workloads else Path(tmp) / "none.crt"
        for workload in workloads:
            for server in servers:
                if not serves(server, workload):
                    continue
                for loop in loops:
                    try:
                        r = measure(server, loop, workload, args, cert)
                    except (RuntimeError, subprocess.CalledProcessError, AttributeError) as e:
                        print(
                            f"| {workload} | {server} | {loop} | failed: {e} ||||||||", flush=True
                        )
                        failed = True
                        continue
                    print(
                        f"| {workload} | {server} | {loop} | {r['requests']:,} "
                        f"| {r['before']:.1f} | {r['after']:.1f} | {r['growth']:+.3f} "
                        f"| {r['slope']:+.3f} | {r['settled']:+.3f} | {r['first_half']:+.3f} "
                        f"| {r['second_half']:+.3f} | {r['errors']} |",
                        flush=True,
                    )
                    if r["errors"] or (server == "ferrocorn" and r["settled"] > args.target):
                        failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
