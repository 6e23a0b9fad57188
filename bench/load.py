"""The load tools and what they report: wrk (HTTP/1.1), h2load (h2c by prior knowledge)
and bench/tools' wsload (WebSocket echo round trips).

Each run_* runs the tool once and parses its output into the same dict: rps, requests,
p99_ms (None for h2load), non2xx, sock_errors, sock_detail and errors. A tool that
fails, or whose output can't be read, raises RunFailed.
"""

from __future__ import annotations

import json
import re
import subprocess

from lifecycle import RunFailed
from servers import HERE, HOST, TOOLS_BIN, WORKLOADS

LUA_SCRIPTS = {"post10k": HERE / "post10k.lua"}  # a 10 KB POST
LATENCY_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}
H2LOAD_STREAMS = 10


def run_wrk(url: str, seconds: int, connections: int, script: str | None, threads: int = 1) -> dict:
    """One wrk run (script: a LUA_SCRIPTS name or None). Raises RunFailed if wrk fails."""
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{int(seconds)}s", "--latency"]
    if script:
        cmd += ["-s", str(LUA_SCRIPTS[script])]
    cmd.append(url)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30)
    out = proc.stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in ", out)
    p99 = re.search(r"^\s*99%\s+([\d.]+)(us|ms|s|m|h)\s*$", out, re.MULTILINE)
    if proc.returncode != 0 or not (rps and total and p99):
        raise RunFailed(f"wrk failed ({proc.returncode}): {(proc.stderr or out).strip()[:300]}")
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    result = {
        "rps": float(rps.group(1)),
        "requests": int(total.group(1)),
        "p99_ms": float(p99.group(1)) * LATENCY_UNITS[p99.group(2)],
        "non2xx": int(non2xx.group(1)) if non2xx else 0,
        "sock_errors": sum(int(g) for g in sock.groups()) if sock else 0,
        "sock_detail": sock.group(0) if sock else "",
    }
    result["errors"] = result["non2xx"] + result["sock_errors"]
    return result


def run_h2load(url: str, seconds: int, connections: int, threads: int = 1) -> dict:
    """One h2load run over h2c by prior knowledge. h2load reports no percentiles, so
    p99 is left out for this workload (mean request time is kept)."""
    cmd = ["h2load", f"-c{connections}", f"-m{H2LOAD_STREAMS}", f"-t{threads}"]
    cmd += [f"-D{int(seconds)}", url]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30)
    out = proc.stdout
    rps = re.search(r"finished in [\d.]+s, ([\d.]+) req/s", out)
    done = re.search(
        r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, "
        r"(\d+) failed, (\d+) errored",
        out,
    )
    codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    mean = re.search(r"time for request:\s+\S+\s+\S+\s+([\d.]+)(us|ms|s)", out)
    if proc.returncode != 0 or not (rps and done and codes):
        raise RunFailed(f"h2load failed ({proc.returncode}): {(proc.stderr or out).strip()[:300]}")
    failed = int(done.group(3)) + int(done.group(4))
    non2xx = sum(int(codes.group(i)) for i in (2, 3, 4))
    return {
        "rps": float(rps.group(1)),
        "requests": int(done.group(2)),
        "p99_ms": None,
        "mean_ms": float(mean.group(1)) * LATENCY_UNITS[mean.group(2)] if mean else None,
        "non2xx": non2xx,
        "sock_errors": failed,
        "sock_detail": f"h2load: {failed} failed or errored",
        "errors": non2xx + failed,
    }


def run_wsload(port: int, path: str, seconds: float, connections: int) -> dict:
    """One wsload run (bench/tools): round trips per second and their p99."""
    cmd = [str(TOOLS_BIN / "wsload"), f"{HOST}:{port}", path, str(connections), str(seconds)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30)
    if proc.returncode != 0:
        raise RunFailed(f"wsload failed ({proc.returncode}): {proc.stderr.strip()[:300]}")
    data = json.loads(proc.stdout)
    return {
        "rps": data["round_trips"] / data["seconds"],
        "requests": data["round_trips"],
        "p99_ms": data["p99_ms"],
        "non2xx": 0,
        "sock_errors": 0,
        "sock_detail": "",
        "errors": 0,
    }


def run_load(workload: str, port: int, seconds: int, args) -> dict:
    """The workload's load tool, run once for seconds with args.connections and
    args.threads."""
    _, path, tool, script = WORKLOADS[workload]
    url = f"http://{HOST}:{port}{path}"
    if tool == "h2load":
        return run_h2load(url, seconds, args.connections, args.threads)
    if tool == "wsload":
        return run_wsload(port, path, seconds, args.connections)
    return run_wrk(url, seconds, args.connections, script, args.threads)
