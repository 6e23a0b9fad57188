"""Memory stability of one ferrocorn worker: RSS before and after at least a million
keep-alive requests (wrk on 127.0.0.1, bounded in time). The target is growth < 5%.

Usage: bench/memory.py [--requests N] [--app examples.hello:app]
ferrocorn is run by $FERROCORN_PYTHON (default: the project's .venv/bin/python).
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = os.environ.get("FERROCORN_PYTHON", str(ROOT / ".venv" / "bin" / "python"))


def worker_rss_mb(master: int) -> float:
    """RSS of the master's children (the workers), from /proc."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            if int(stat[1]) == master:
                total += int(Path(f"/proc/{entry}/statm").read_text().split()[1])
        except (OSError, IndexError):
            continue
    return total * os.sysconf("SC_PAGE_SIZE") / 1e6


def wrk(url: str, seconds: int) -> tuple[int, int]:
    """(requests, errors) of one keep-alive wrk run."""
    out = subprocess.run(
        ["wrk", "-t1", "-c64", f"-d{seconds}s", url], capture_output=True, text=True, check=True
    ).stdout
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return requests, errors + (int(non2xx.group(1)) if non2xx else 0)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--requests", type=int, default=1_000_000)
    p.add_argument("--app", default="examples.hello:app")
    p.add_argument("--max-seconds", type=float, default=300)
    args = p.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [PYTHON, "-m", "ferrocorn", args.app, "--port", str(port), "--no-access-log"]
    proc = subprocess.Popen(cmd, cwd=ROOT, start_new_session=True, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(url, timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        warm, _ = wrk(url, 5)  # let allocator pools and caches settle first
        before = worker_rss_mb(proc.pid)
        served = errors = 0
        start = time.monotonic()
        while served < args.requests and time.monotonic() - start < args.max_seconds:
            n, e = wrk(url, 10)
            served, errors = served + n, errors + e
        after = worker_rss_mb(proc.pid)
        growth = (after - before) / before * 100
        print(
            f"{args.app}: {warm} warm-up requests, then {served} keep-alive requests "
            f"in {time.monotonic() - start:.0f} s, {errors} errors"
        )
        print(f"worker RSS {before:.1f} MB -> {after:.1f} MB: {growth:+.2f}% (target < 5%)")
        return 0 if growth < 5 and errors == 0 and served >= args.requests else 1
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)


if __name__ == "__main__":
    sys.exit(main())
