"""Is a worker's memory growth a leak? Counts the heap a ferrocorn worker keeps from the
requests it serves, with heaptrack attached to the running worker.

    bench/heapcheck.py                               # hello, then fastapi: 30 s each
    bench/heapcheck.py --workloads fastapi --seconds 60 --loop asyncio

bench/memory.py reads RSS, which can't tell a leak from allocators settling: glibc's
per-thread caches and partly used pages, and pymalloc's pools, stay resident after the
objects in them are freed, and fill up more slowly as a run goes on. heaptrack sees
every malloc and free instead. For each workload (bench/memory.py's, one worker): a
warm-up, then heaptrack attaches to the worker (it needs gdb: `apt-get install heaptrack
gdb`), the load runs for --seconds, the worker idles for --settle-seconds, and is killed
with SIGKILL, so that what it still holds is read before any exit-time cleanup. heaptrack
then counts as kept every allocation made while it was attached and not freed by then:
a leak grows that figure with the requests served; settling allocators don't touch it.
Prints, per workload: requests served, allocation calls per request, bytes kept (and per
million requests), and the call sites that kept the most.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from servers import ROOT

from memory import WORKLOADS, free_port, make_cert, run_load, server_command, wait_ready

DEFAULT_WORKLOADS = "hello,fastapi"
COLUMNS = (
    "workload", "loop", "requests", "allocations per request", "bytes kept",
    "bytes kept per million requests", "errors",
)  # fmt: skip


def worker_pid(master: int, timeout: float = 10) -> int:
    """The master's one child (the worker), from /proc."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            with contextlib.suppress(OSError, IndexError):
                stat = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
                if int(stat[1]) == master:
                    return int(entry)
        time.sleep(0.1)
    raise RuntimeError(f"no worker under master {master}")


def attach(pid: int, output: Path) -> subprocess.Popen:
    """heaptrack attached to `pid`, once its injection finished (it prints so)."""
    tracker = subprocess.Popen(
        ["heaptrack", "-o", str(output), "-p", str(pid)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    for line in tracker.stdout:
        if "injection finished" in line:
            return tracker
    raise RuntimeError(f"heaptrack could not attach to {pid} (is gdb installed?)")


def kept(data: Path, sites: int) -> dict:
    """The figures heaptrack_print gives for what was allocated and not freed."""
    out = subprocess.run(
        ["heaptrack_print", "-f", str(data), "--print-leaks", "1", "--print-peaks", "0",
         "--print-allocators", "0", "--print-temporary", "0",
         "--peak-limit", str(sites), "--sub-peak-limit", "0"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    calls = int(re.search(r"calls to allocation functions: (\d+)", out).group(1))
    total = re.search(r"total memory leaked: ([\d.]+)([KMG]?)", out)
    scale = {"": 1, "K": 1e3, "M": 1e6, "G": 1e9}[total.group(2)]
    leaks = out.split("MEMORY LEAKS", 1)[1].split("total runtime", 1)[0].strip()
    return {"calls": calls, "kept": float(total.group(1)) * scale, "sites": leaks}


def check(workload: str, args, cert: Path, scratch: Path) -> dict:
    port = free_port()
    cmd = server_command("ferrocorn", args.loop, workload, port, cert)
    proc = subprocess.Popen(
        cmd, cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    data = scratch / f"heaptrack.{workload}"
    try:
        w = WORKLOADS[workload]
        wait_ready(port, w.path, w.tls, proc, http2=workload == "h2")
        run_load(workload, port, args.warmup_seconds)
        time.sleep(args.settle_seconds)
        pid = worker_pid(proc.pid)
        tracker = attach(pid, data)
        requests, errors = run_load(workload, port, args.seconds)
        time.sleep(args.settle_seconds)
        os.kill(pid, signal.SIGKILL)
        tracker.communicate(timeout=120)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(15)
    (found,) = scratch.glob(f"heaptrack.{workload}*")
    return {"workload": workload, "requests": requests, "errors": errors, **kept(found, 5)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--workloads", default=DEFAULT_WORKLOADS)
    p.add_argument("--loop", default="uvloop", choices=("uvloop", "asyncio"))
    p.add_argument("--seconds", type=int, default=30, help="of load while heaptrack watches")
    p.add_argument("--warmup-seconds", type=int, default=10)
    p.add_argument("--settle-seconds", type=int, default=12)
    args = p.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="heapcheck-") as tmp:
        scratch = Path(tmp)
        cert = make_cert(scratch)
        for workload in (n.strip() for n in args.workloads.split(",") if n.strip()):
            if workload not in WORKLOADS:
                raise SystemExit(f"unknown workload {workload} (known: {', '.join(WORKLOADS)})")
            r = check(workload, args, cert, scratch)
            results.append(r)
            print(f"\n== {workload} ({args.loop}): what heaptrack saw kept\n{r['sites']}")
    print("\n| " + " | ".join(COLUMNS) + " |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in results:
        n = r["requests"]
        row = (
            r["workload"], args.loop, f"{n:,}", f"{r['calls'] / n:.1f}", f"{r['kept']:,.0f}",
            f"{r['kept'] / n * 1e6:,.0f}", str(r["errors"]),
        )  # fmt: skip
        print("| " + " | ".join(row) + " |")
    return 1 if any(r["errors"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
