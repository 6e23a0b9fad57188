"""A long soak of one ferrocorn server under keep-alive load while its workers are
restarted, killed and stopped over and over (issue #14): what a fleet's worst day does
to a server that runs for weeks.

Each cycle runs `wrk` (hello world, 64 keep-alive connections) against 2 workers while
one fault happens: a HUP (rolling restart), a `kill -9` of a worker, or a SIGSTOP of a
worker that `--timeout` must replace. After each cycle the master's RSS and open fds
and the workers' RSS are read from /proc. A server that leaks per restart (fds, pipes,
memory in the master) shows a trend here; a single occurrence of each fault is what
tests/test_faults.py and tests/test_drain.py check in the suite (the short versions).

Usage: bench/soak.py [--minutes 30] [--cycle-seconds 10]     (make soak)
ferrocorn is run by $FERROCORN_PYTHON (default: the project's .venv/bin/python).
Loopback only; bounded by --minutes.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = os.environ.get("FERROCORN_PYTHON", str(ROOT / ".venv" / "bin" / "python"))
FAULTS = ("hup", "kill", "stop")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(c) for c in text.split()]


def rss_mb(pid: int) -> float:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    match = re.search(r"VmRSS:\s+(\d+) kB", status)
    return int(match.group(1)) / 1024 if match else 0.0


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def wait_serving(url: str, seconds: float, server: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server is not None and server.poll() is not None:
            raise SystemExit(f"the server exited with {server.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"the server at {url} is not serving")


def wrk(url: str, seconds: float) -> subprocess.Popen:
    return subprocess.Popen(
        ["wrk", "-t1", "-c64", f"-d{max(1, int(seconds))}s", url],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wrk_result(proc: subprocess.Popen) -> tuple[int, int]:
    """(requests, failed): socket errors and non-2xx answers both count as failed."""
    out = proc.communicate()[0]
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    failed = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return requests, failed + (int(non2xx.group(1)) if non2xx else 0)


def inject(fault: str, master: int) -> None:
    workers = children(master)
    if fault == "hup":
        os.kill(master, signal.SIGHUP)
    elif fault == "kill" and workers:
        os.kill(workers[0], signal.SIGKILL)
    elif fault == "stop" and workers:
        os.kill(workers[0], signal.SIGSTOP)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--minutes", type=float, default=30)
    p.add_argument("--cycle-seconds", type=float, default=10)
    p.add_argument("--app", default="examples.hello:app")
    args = p.parse_args()
    # Two of every three faults end a worker (kill -9, and SIGSTOP then --timeout). The
    # master stops, exit 1, when workers die 5 times within 60 s (a crash loop, see
    # docs/signals.md): cycles of 10 s or more keep that at 4 deaths a minute.
    if args.cycle_seconds < 10:
        p.error("--cycle-seconds must be at least 10 (the master's crash-loop limit)")
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    server = subprocess.Popen(
        [PYTHON, "-m", "ferrocorn", args.app, "--port", str(port), "--workers", "2"]
        + ["--no-access-log", "--timeout", "3"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    rows = []
    try:
        wait_serving(url, 30, server)
        time.sleep(1)
        start = time.monotonic()
        base_fds = open_fds(server.pid)
        cycle = 0
        print("cycle | fault | requests | failed | master RSS MB | master fds | worker RSS MB")
        print("---:|---|---:|---:|---:|---:|---")
        while time.monotonic() - start < args.minutes * 60:
            fault = FAULTS[cycle % len(FAULTS)]
            load = wrk(url, args.cycle_seconds)
            time.sleep(args.cycle_seconds / 3)
            inject(fault, server.pid)
            requests, failed = wrk_result(load)
            wait_serving(url, 30, server)
            while len(children(server.pid)) != 2:  # replacements booted, old ones gone
                if server.poll() is not None:
                    raise SystemExit(f"the server exited with {server.returncode}")
                time.sleep(0.1)
            workers = ", ".join(f"{rss_mb(w):.1f}" for w in children(server.pid))
            row = (cycle, fault, requests, failed, rss_mb(server.pid), open_fds(server.pid))
            rows.append(row)
            print(
                f"{cycle} | {fault} | {requests} | {failed} | {row[4]:.1f} | {row[5]} | {workers}"
            )
            cycle += 1
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)
    if not rows:
        return 1
    by_fault = {f: sum(r[3] for r in rows if r[1] == f) for f in FAULTS}
    print(
        f"\n{len(rows)} cycles, {sum(r[2] for r in rows)} requests; failed by fault: {by_fault}"
        f"\nmaster RSS {rows[0][4]:.1f} -> {rows[-1][4]:.1f} MB;"
        f" master fds {base_fds} at start, {rows[-1][5]} at the end"
    )
    # A master that keeps fds of workers it replaced leaks one set per restart.
    return 0 if rows[-1][5] <= base_fds else 1


if __name__ == "__main__":
    raise SystemExit(main())
