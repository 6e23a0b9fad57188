"""Run ferrocorn and its peers on the same apps, interleaved, and print ratios.

For round in 1..R, for each workload, for each server: the server is started fresh with
one worker, checked (one real request, answer compared), warmed up, then measured with
wrk on 127.0.0.1. Reported per (workload, server), as the median over the rounds:
req/s, p99 latency, server CPU time per request (user+system of the server's whole
process tree, from /proc), and the RSS of the idle server tree after boot. Ratios are
against granian. Errors (non-2xx responses, socket errors) are flagged loudly.

Exit status: 0, or 1 when ferrocorn was asked for and failed to serve (did not start,
answered wrongly, died, or had errors under load). A failing peer is reported, not fatal.

Normally started by bench/run.sh, which prepares bench/.venv and wrk.
"""

from __future__ import annotations

import argparse
import atexit
import datetime
import http.client
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PEERS_BIN = HERE / ".venv" / "bin"
FERROCORN_PYTHON = os.environ.get("FERROCORN_PYTHON", str(ROOT / ".venv" / "bin" / "python"))
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
HOST = "127.0.0.1"

ALL_SERVERS = ("ferrocorn", "granian", "uvicorn", "gunicorn", "ceiling", "ferrocorn-runner")
# ferrocorn's opt-in request runners (--task-impl runner), measured where they differ:
# requests that don't suspend.
RUNNER_WORKLOADS = {"hello", "fastapi", "echo"}
# ceiling: a plain hyper server (bench/tools), the no-Python ceiling of hello and h2hello.
TOOLS = HERE / "tools"
TOOLS_BIN = TOOLS / "target" / "release"
BASELINE = "granian"
ECHO_BODY = bytes(range(256)) * 40  # 10240 bytes, for the correctness check


# name: (app, path, load tool, wrk script name or None). Load tools: wrk (HTTP/1.1),
# h2load (h2c by prior knowledge, 10 streams per connection), wsload (bench/tools: each
# connection sends a 32-byte text message and waits for its echo).
WORKLOADS = {
    "hello": ("examples.hello:app", "/", "wrk", None),
    "fastapi": ("examples.fastapi_app:app", "/json", "wrk", None),
    "echo": ("examples.echo:app", "/", "wrk", "post10k"),
    "stream": ("examples.stream:app", "/", "wrk", None),
    "h2hello": ("examples.hello:app", "/", "h2load", None),
    "wsecho": ("examples.ws_echo:app", "/", "wsload", None),
    "hello2w": ("examples.hello:app", "/", "wrk", None),
}
# Workers per server; every workload not named here runs one. hello2w is hello world with
# two workers, to read next to hello (the "2 workers vs 1" line of the report).
WORKERS = {"hello2w": 2}
# Who can serve what: uvicorn and gunicorn have no HTTP/2; the ceiling only says hello.
SERVES = {
    "h2hello": {"ferrocorn", "granian", "ceiling"},
    "hello": set(ALL_SERVERS),
    "hello2w": {"ferrocorn", "granian"},
}
PYTHON_SERVERS = {"ferrocorn", "granian", "uvicorn", "gunicorn"}
LUA_SCRIPTS = {"post10k": HERE / "post10k.lua"}  # a 10 KB POST


@dataclass(frozen=True)
class Check:
    """The one request made before a run, and the answer it must get."""

    method: str
    body: bytes
    expect: bytes | dict  # exact body, or the JSON it must decode to


CHECKS = {
    "hello": Check("GET", b"", b"Hello, world!"),
    "fastapi": Check("GET", b"", {"message": "Hello, world!", "items": [1, 2, 3]}),
    "echo": Check("POST", ECHO_BODY, ECHO_BODY),
    "stream": Check("GET", b"", b"x" * (1 << 20)),
    "h2hello": Check("GET", b"", b"Hello, world!"),
    "wsecho": Check("GET", b"", b"ok"),
    "hello2w": Check("GET", b"", b"Hello, world!"),
}
ALIASES = {"echo10k": "echo", "json": "fastapi"}


def serves(server: str, workload: str) -> bool:
    if server == "ferrocorn-runner":
        return workload in RUNNER_WORKLOADS
    return server in SERVES.get(workload, PYTHON_SERVERS)


def is_ferrocorn(server: str) -> bool:
    return server.startswith("ferrocorn")


def server_command(server: str, app: str, port: int, workload: str = "hello") -> list[str]:
    """The command line for one server: one worker (WORKERS says when more), no access log,
    uvloop everywhere."""
    workers = str(WORKERS.get(workload, 1))
    if server == "ceiling":
        return [str(TOOLS_BIN / "ceiling"), str(port)]
    if is_ferrocorn(server):
        # Default log level (info): "ferrocorn ready" is an info line; it logs nothing per
        # request without the access log.
        runner = ["--task-impl", "runner"] if server == "ferrocorn-runner" else []
        return [
            FERROCORN_PYTHON, "-m", "ferrocorn", app,
            "--host", HOST, "--port", str(port), "--workers", workers,
            "--no-access-log", "--loop", "uvloop", *runner,
        ]  # fmt: skip
    if server == "granian":
        protocols = {
            "wsecho": [],  # WebSockets are on by default
            "h2hello": ["--no-ws", "--http", "2"],
        }.get(workload, ["--no-ws"])
        return [
            str(PEERS_BIN / "granian"), "--interface", "asgi",
            "--host", HOST, "--port", str(port), "--workers", workers,
            *protocols, "--log-level", "warning", "--loop", "uvloop", app,
        ]  # fmt: skip
    if server == "uvicorn":
        return [
            str(PEERS_BIN / "uvicorn"), app,
            "--host", HOST, "--port", str(port), "--workers", workers,
            "--no-access-log", "--log-level", "warning", "--loop", "uvloop", "--http", "httptools",
        ]  # fmt: skip
    if server == "gunicorn":
        # UvicornWorker: uvloop and httptools when installed; gunicorn logs no access by default.
        return [
            str(PEERS_BIN / "gunicorn"), "-k", "uvicorn_worker.UvicornWorker", "-w", workers,
            "-b", f"{HOST}:{port}", "--log-level", "warning", app,
        ]  # fmt: skip
    raise ValueError(server)


# --- /proc accounting -----------------------------------------------------------------


def _stat_fields(pid: int) -> list[str]:
    # The command name (field 2) may hold spaces and parentheses: split after the last ")".
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def tree_pids(root_pid: int) -> list[int]:
    """root_pid and all its descendants, found through the ppid of every process."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(_stat_fields(int(entry))[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    pids, todo = [], [root_pid]
    while todo:
        pid = todo.pop()
        pids.append(pid)
        todo.extend(children.get(pid, []))
    return pids


def start_time(pid: int) -> int | None:
    """A process's start time (stat field 22): tells a live pid from a reused one."""
    try:
        return int(_stat_fields(pid)[19])
    except (OSError, IndexError, ValueError):
        return None


def tree_cpu_seconds(root_pid: int) -> float:
    """utime + stime (all threads) summed over the process tree."""
    ticks = 0
    for pid in tree_pids(root_pid):
        try:
            fields = _stat_fields(pid)
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])  # stat fields 14 and 15
    return ticks / CLOCK_TICKS


def process_rss_mb(root_pid: int) -> list[float]:
    """The RSS of each process of the tree. The largest is the worker, the process that
    runs the app (a single-process server such as uvicorn with one worker is its own)."""
    sizes = []
    for pid in tree_pids(root_pid):
        try:
            sizes.append(int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_SIZE / 1e6)
        except (OSError, IndexError):
            continue
    return sizes


def tree_rss_mb(root_pid: int) -> float:
    return sum(process_rss_mb(root_pid))


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy (all cores), from /proc/stat."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# --- server processes -----------------------------------------------------------------

LIVE: dict[int, subprocess.Popen] = {}  # every server still running, by pid


def stop_server(proc: subprocess.Popen, grace: float = 5.0) -> None:
    """SIGTERM the server's process group, then SIGKILL it and any stray descendant."""
    strays = [(pid, start_time(pid)) for pid in tree_pids(proc.pid)[1:]]
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    for pid, started in strays:  # a descendant that left the process group, if still there
        if started is not None and start_time(pid) == started:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    proc.wait()
    LIVE.pop(proc.pid, None)


def stop_all_servers() -> None:
    for proc in list(LIVE.values()):
        stop_server(proc, grace=2.0)


def _terminate(signum, _frame):
    raise SystemExit(128 + signum)  # unwinds through every `finally`, which stops servers


# --- HTTP checks and wrk --------------------------------------------------------------


class RunFailed(RuntimeError):
    pass


def http_request(
    port: int, path: str, method: str = "GET", body: bytes = b"", timeout: float = 2.0
) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        headers = {"Content-Type": "application/octet-stream"} if body else {}
        conn.request(method, path, body=body or None, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def h2_request(port: int, path: str) -> tuple[int, bytes]:
    """A GET over h2c by prior knowledge, with curl (the servers may speak only HTTP/2)."""
    out = subprocess.run(
        ["curl", "-sS", "--http2-prior-knowledge", "-o", "-", "-w", "\n%{http_code}"]
        + [f"http://{HOST}:{port}{path}"],
        capture_output=True,
        timeout=5,
    )
    body, _, code = out.stdout.rpartition(b"\n")
    if out.returncode != 0 or not code.isdigit():
        raise OSError(f"curl --http2-prior-knowledge failed: {out.stderr.decode()[:200]}")
    return int(code), body


def wait_ready(
    port: int,
    path: str,
    proc,
    timeout: float = 30.0,
    log: Path | None = None,
    request=http_request,
):
    """Wait until the server answers 200 to a GET on path. With log (ferrocorn's output),
    wait for its "ferrocorn ready" line first. Raises RunFailed."""
    deadline = time.monotonic() + timeout
    need_line = log is not None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RunFailed(f"server exited with status {proc.returncode} before serving")
        if need_line:
            need_line = "ferrocorn ready" not in log.read_text(errors="replace")
        if not need_line:
            try:
                if request(port, path)[0] == 200:
                    return
            except (OSError, http.client.HTTPException):
                pass
        time.sleep(0.1)
    what = '"ferrocorn ready" on stderr' if need_line else f"a 200 on GET {path}"
    raise RunFailed(f"no {what} within {timeout:g} s")


def check_answer(port: int, path: str, check: Check, request=http_request) -> None:
    if request is http_request:
        status, body = http_request(port, path, check.method, check.body)
    else:
        status, body = request(port, path)
    if status != 200:
        raise RunFailed(f"{check.method} {path} answered {status}")
    if isinstance(check.expect, dict):
        try:
            ok = json.loads(body) == check.expect
        except ValueError:
            ok = False
    else:
        ok = body == check.expect
    if not ok:
        raise RunFailed(f"{check.method} {path}: unexpected body {body[:80]!r} ({len(body)} B)")


LATENCY_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


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


H2LOAD_STREAMS = 10


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
    _, path, tool, script = WORKLOADS[workload]
    url = f"http://{HOST}:{port}{path}"
    if tool == "h2load":
        return run_h2load(url, seconds, args.connections, args.threads)
    if tool == "wsload":
        return run_wsload(port, path, seconds, args.connections)
    return run_wrk(url, seconds, args.connections, script, args.threads)


def build_tools() -> None:
    """Build bench/tools (the ceiling server and the WebSocket load client) once."""
    if (TOOLS_BIN / "ceiling").exists() and (TOOLS_BIN / "wsload").exists():
        return
    print("== building bench/tools (cargo build --release)", flush=True)
    subprocess.run(
        ["cargo", "build", "--release", "--quiet", "--manifest-path", str(TOOLS / "Cargo.toml")],
        check=True,
    )


@dataclass
class Run:
    ok: bool = False
    reason: str = ""
    log_tail: str = ""
    data: dict = field(default_factory=dict)

    @property
    def errors(self) -> int:
        return self.data.get("errors", 0)


def measure(server: str, workload: str, args, logdir: Path) -> Run:
    app, path, tool, _ = WORKLOADS[workload]
    run = Run()
    if is_ferrocorn(server) and not os.access(FERROCORN_PYTHON, os.X_OK):
        run.reason = f"FERROCORN_PYTHON={FERROCORN_PYTHON} is not an executable"
        return run
    port = free_port()
    log = logdir / f"{server}-{workload}.log"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    with log.open("wb") as logfile:
        proc = subprocess.Popen(
            server_command(server, app, port, workload),
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=logfile,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: killpg reaches every worker
        )
    LIVE[proc.pid] = proc
    try:
        request = h2_request if tool == "h2load" else http_request
        ready_line = log if is_ferrocorn(server) else None
        wait_ready(port, path, proc, args.boot_timeout, ready_line, request)
        check_answer(port, path, CHECKS[workload], request)
        if tool == "wsload":
            run_wsload(port, path, 0.2, 1)  # one echo checked by wsload itself
        time.sleep(0.5)
        idle = process_rss_mb(proc.pid)
        run.data["rss_mb"], run.data["worker_rss_mb"] = sum(idle), max(idle, default=0.0)
        if args.warmup > 0:
            warm = run_load(workload, port, args.warmup, args)
            run.data["warmup_errors"] = warm["errors"]
        cpu0, busy0, kids0 = (
            tree_cpu_seconds(proc.pid),
            machine_busy_seconds(),
            children_cpu_seconds(),
        )
        t0 = time.monotonic()
        result = run_load(workload, port, args.duration, args)
        elapsed = time.monotonic() - t0
        cpu = tree_cpu_seconds(proc.pid) - cpu0
        busy, wrk_cpu = machine_busy_seconds() - busy0, children_cpu_seconds() - kids0
        if proc.poll() is not None:
            raise RunFailed(f"server died during the run (status {proc.returncode})")
        run.data.update(result)
        run.data["loaded_rss_mb"] = tree_rss_mb(proc.pid)
        run.data["cpu_us_per_req"] = cpu / max(result["requests"], 1) * 1e6
        run.data["server_cores"] = cpu / elapsed
        run.data["wrk_cores"] = wrk_cpu / elapsed
        # Whatever else kept the CPUs busy meanwhile (other processes, this script).
        run.data["other_cores"] = max(0.0, busy - cpu - wrk_cpu) / elapsed
        run.ok = result["requests"] > 0
        if not run.ok:
            run.reason = "no request completed"
    except (RunFailed, OSError, http.client.HTTPException, subprocess.TimeoutExpired) as exc:
        run.reason = str(exc) or type(exc).__name__
    finally:
        stop_server(proc)
    if not run.ok:
        lines = log.read_text(errors="replace").splitlines()
        run.log_tail = "\n".join(lines[-25:])
    return run


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


# --- environment report ---------------------------------------------------------------

PEER_DISTS = (
    "granian", "uvicorn", "gunicorn", "uvicorn-worker", "fastapi", "starlette", "pydantic",
    "uvloop", "httptools",
)  # fmt: skip
FERROCORN_DISTS = ("ferrocorn", "fastapi", "starlette", "pydantic", "uvloop")


def dist_versions(python: str, dists: tuple[str, ...]) -> str:
    code = (
        "import importlib.metadata as m, platform, sys\n"
        "def v(n):\n"
        "    try: return m.version(n)\n"
        "    except m.PackageNotFoundError: return 'missing'\n"
        f"print(', '.join(f'{{n}} {{v(n)}}' for n in {dists!r}) + "
        "', Python ' + platform.python_version())"
    )
    try:
        out = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=30)
    except OSError as exc:
        return f"unavailable ({exc})"
    return out.stdout.strip() or f"unavailable ({out.stderr.strip()[-200:]})"


def git_revision() -> str:
    try:
        rev = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return "?"
    return f"{rev or '?'}{' + uncommitted changes' if dirty else ''}"


def machine() -> str:
    model = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    nproc = len(os.sched_getaffinity(0))
    mem = Path("/proc/meminfo").read_text().split("\n", 1)[0].split()[1]
    return (
        f"nproc {nproc}, {model}, {int(mem) / 2**20:.0f} GiB RAM, "
        f"kernel {platform.system()} {platform.release()}"
    )


def wrk_version() -> str:
    out = subprocess.run(["wrk", "-v"], capture_output=True, text=True)
    return (out.stdout or out.stderr).split("\n", 1)[0].split(" Copyright")[0].strip()


# --- report ---------------------------------------------------------------------------


def fmt_ratio(value: float | None, base: float | None) -> str:
    if value is None or not base:
        return "-"
    return f"{value / base:.2f}x"


# Issue 4's targets for ferrocorn against granian: (workload, ratio that must hold).
RPS_TARGETS = {"hello": 1.5, "fastapi": 1.2, "echo": 1.5, "stream": 1.0}
CPU_TARGET = 0.7  # CPU per request, at most this fraction of granian's
SCALING_TARGET = 1.6  # hello2w req/s / hello req/s


def target_lines(med) -> list[str]:
    """One table row per issue 4 target that this run measured: the figure and met or not.
    med(workload, server, key) is the median over the rounds, or None when not measured."""
    rows = []

    def row(what: str, figure: str, met: bool) -> None:
        rows.append(f"| {what} | {figure} | {'met' if met else 'NOT MET'} |")

    for workload, target in RPS_TARGETS.items():
        ours, theirs = med(workload, "ferrocorn", "rps"), med(workload, BASELINE, "rps")
        if ours and theirs:
            row(f"{workload} req/s >= {target}x {BASELINE}", f"{ours / theirs:.2f}x",
                ours >= target * theirs)  # fmt: skip
    for workload in RPS_TARGETS:
        ours, theirs = med(workload, "ferrocorn", "p99_ms"), med(workload, BASELINE, "p99_ms")
        if ours and theirs:
            row(f"{workload} p99 <= {BASELINE}'s", f"{ours:.2f} vs {theirs:.2f} ms",
                ours <= theirs)  # fmt: skip
    for workload in RPS_TARGETS:
        ours = med(workload, "ferrocorn", "cpu_us_per_req")
        theirs = med(workload, BASELINE, "cpu_us_per_req")
        if ours and theirs:
            row(f"{workload} CPU/request <= {CPU_TARGET}x {BASELINE}'s",
                f"{ours / theirs:.2f}x", ours <= CPU_TARGET * theirs)  # fmt: skip
    ours, theirs = (
        med("fastapi", "ferrocorn", "worker_rss_mb"),
        med("fastapi", "uvicorn", "worker_rss_mb"),
    )
    if ours and theirs:
        row("idle worker RSS with FastAPI <= uvicorn's", f"{ours:.1f} vs {theirs:.1f} MB",
            ours <= theirs)  # fmt: skip
    one, two = med("hello", "ferrocorn", "rps"), med("hello2w", "ferrocorn", "rps")
    if one and two:
        row(f"2 workers vs 1 on hello >= {SCALING_TARGET}x", f"{two / one:.2f}x",
            two >= SCALING_TARGET * one)  # fmt: skip
        g1, g2 = med("hello", BASELINE, "rps"), med("hello2w", BASELINE, "rps")
        if g1 and g2:
            rows.append(f"| (same for {BASELINE}, for reference) | {g2 / g1:.2f}x | |")
    if not rows:
        return []
    return ["| target | this run | |", "|---|---:|---|"] + rows


def build_report(args, servers, workloads, results, started) -> tuple[str, list[str]]:
    """The markdown report, and the loud problems (errors, failures) to repeat on stderr."""
    problems: list[str] = []

    def med(workload: str, server: str, key: str) -> float | None:
        runs = [r for r in results.get((workload, server), []) if r.ok]
        return statistics.median(r.data[key] for r in runs) if runs else None

    lines = [
        f"# ferrocorn benchmark, {started:%Y-%m-%d %H:%M}",
        "",
        f"- Machine: {machine()}",
        f"- ferrocorn: {dist_versions(FERROCORN_PYTHON, FERROCORN_DISTS)} "
        f"({FERROCORN_PYTHON}, git {git_revision()})",
        f"- Peers: {dist_versions(str(PEERS_BIN / 'python'), PEER_DISTS)} (bench/.venv)",
        f"- Load: {wrk_version()}, `wrk -t{args.threads} -c{args.connections} --latency` "
        f"on {HOST}; h2hello: `h2load -c{args.connections} -m{H2LOAD_STREAMS}` (h2c by "
        f"prior knowledge); wsecho: bench/tools wsload, {args.connections} connections; "
        f"{args.warmup} s warm-up + {args.duration} s measured per run, "
        f"median of {args.rounds} interleaved round(s), one worker per server (two in hello2w)",
        "",
        "| workload | server | req/s | p99 ms | CPU µs/req | idle RSS MB | idle worker MB "
        f"| loaded RSS MB | req/s vs {BASELINE} | CPU vs {BASELINE} |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for workload in workloads:
        base_rps, base_cpu = (
            med(workload, BASELINE, "rps"),
            med(workload, BASELINE, "cpu_us_per_req"),
        )
        for server in servers:
            if not serves(server, workload):
                lines.append(f"| {workload} | {server} | n/a | | | | | | | |")
                continue
            runs = results.get((workload, server), [])
            good = [r for r in runs if r.ok]
            errors = sum(r.errors for r in runs)
            label = server
            if len(good) < len(runs):
                label += f" **FAILED {len(runs) - len(good)}/{len(runs)}**"
            if errors:
                label += f" **{errors} ERRORS**"
            for i, r in enumerate(runs, 1):
                if not r.ok:
                    problems.append(f"{workload}/{server} round {i} FAILED: {r.reason}")
                elif r.data.get("warmup_errors"):
                    problems.append(
                        f"{workload}/{server} round {i}: {r.data['warmup_errors']} errors "
                        "during the warm-up (not in the measured run)"
                    )
                if r.ok and r.errors:
                    problems.append(
                        f"{workload}/{server} round {i}: {r.errors} ERRORS "
                        f"({r.data['non2xx']} non-2xx; {r.data['sock_detail']})"
                    )
            if not good:
                lines.append(f"| {workload} | {label} | FAILED | - | - | - | - | - | - | - |")
                continue
            rps, cpu = med(workload, server, "rps"), med(workload, server, "cpu_us_per_req")
            p99 = med(workload, server, "p99_ms") if good[0].data["p99_ms"] is not None else None
            p99_text = f"{p99:.2f}" if p99 is not None else "-"
            lines.append(
                f"| {workload} | {label} | {rps:.0f} | {p99_text} "
                f"| {cpu:.1f} | {med(workload, server, 'rss_mb'):.1f} "
                f"| {med(workload, server, 'worker_rss_mb'):.1f} "
                f"| {med(workload, server, 'loaded_rss_mb'):.1f} "
                f"| {fmt_ratio(rps, base_rps)} | {fmt_ratio(cpu, base_cpu)} |"
            )
    all_runs = [r for rs in results.values() for r in rs if r.ok]
    lines.append("")
    if all_runs:
        other = max(r.data["other_cores"] for r in all_runs)
        wrk = statistics.median(r.data["wrk_cores"] for r in all_runs)
        lines.append(
            f"CPU µs/req: user+system time of the server's process tree / requests (or "
            f"WebSocket round trips) served. Idle RSS: the server's process tree after boot; "
            f"idle worker: its largest process, the one running the app (for a "
            f"single-process server, the whole server). Loaded RSS: the process tree right "
            f"after the measured run. The load tool used a median {wrk:.2f} core(s); other "
            f"processes at most {other:.2f} core(s) during a measured run. h2load reports "
            "no percentiles: p99 is '-' for h2hello. ceiling: a plain hyper server with no "
            "Python (bench/tools), the upper bound for hello and h2hello."
        )
        if other > 0.15:
            problems.append(
                f"NOISY MACHINE: other processes used up to {other:.2f} core(s) during "
                "measured runs; req/s and p99 are not trustworthy (CPU µs/req less affected)"
            )
    if BASELINE not in servers:
        lines.append(f"Ratios need {BASELINE} in --servers.")
    targets = target_lines(med)
    if targets:
        lines += ["", "### Issue 4 targets", ""] + targets
    if problems:
        lines += ["", "## Problems", ""] + [f"- {p}" for p in problems]
    return "\n".join(lines), problems


# --- main -----------------------------------------------------------------------------


def parse_list(text: str, known, aliases=None, what="name") -> list[str]:
    names = []
    for name in (n.strip() for n in text.split(",")):
        name = (aliases or {}).get(name, name)
        if name not in known:
            raise SystemExit(f"unknown {what} {name!r}; choose from {', '.join(known)}")
        if name not in names:
            names.append(name)
    return names


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="CI smoke: 1 round, 1 s warm-up + 2 s per run, hello only (explicit flags win)",
    )
    p.add_argument("--rounds", type=int, help="interleaved rounds (default 3)")
    p.add_argument("--duration", type=int, help="measured seconds per run (default 10)")
    p.add_argument("--warmup", type=int, help="warm-up seconds per run (default 2)")
    p.add_argument("--connections", type=int, default=64, help="wrk -c (default 64)")
    p.add_argument("--threads", type=int, default=1, help="wrk -t (default 1)")
    p.add_argument("--boot-timeout", type=float, default=30, help="seconds to start serving")
    p.add_argument("--servers", default=",".join(ALL_SERVERS), help="comma-separated")
    p.add_argument("--workloads", help=f"comma-separated from {', '.join(WORKLOADS)}")
    p.add_argument("--out", type=Path, default=HERE / "out", help="where results-*.md go")
    args = p.parse_args()
    quick = {"rounds": 1, "duration": 2, "warmup": 1, "workloads": "hello"}
    full = {"rounds": 3, "duration": 10, "warmup": 2, "workloads": ",".join(WORKLOADS)}
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.rounds < 1 or args.duration < 1 or args.warmup < 0:
        p.error("need --rounds >= 1, --duration >= 1, --warmup >= 0")
    servers = parse_list(args.servers, ALL_SERVERS, what="server")
    workloads = parse_list(args.workloads, WORKLOADS, ALIASES, what="workload")
    if shutil.which("wrk") is None:
        p.error("wrk is not installed (bench/run.sh installs it: apt-get install -y wrk)")

    sys.stdout.reconfigure(errors="backslashreplace")
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started ignoring it
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _terminate)
    atexit.register(stop_all_servers)

    if "ceiling" in servers or "wsecho" in workloads:
        build_tools()
    if "h2hello" in workloads and shutil.which("h2load") is None:
        p.error("h2load is not installed (apt-get install -y nghttp2-client)")

    started = datetime.datetime.now()
    pairs = [(w, s) for w in workloads for s in servers if serves(s, w)]
    total = args.rounds * len(pairs)
    estimate = total * (args.warmup + args.duration + 2)
    print(f"{total} runs, about {estimate // 60} min {estimate % 60} s", flush=True)
    results: dict[tuple[str, str], list[Run]] = {}
    with tempfile.TemporaryDirectory(prefix="ferrocorn-bench-") as tmp:
        try:
            for rnd in range(1, args.rounds + 1):
                for workload, server in pairs:
                    run = measure(server, workload, args, Path(tmp))
                    results.setdefault((workload, server), []).append(run)
                    head = f"round {rnd}/{args.rounds} {workload:8} {server:10}"
                    if run.ok:
                        d = run.data
                        flag = f"  !! {run.errors} ERRORS" if run.errors else ""
                        p99 = "   -  " if d["p99_ms"] is None else f"{d['p99_ms']:6.2f}"
                        print(
                            f"{head} {d['rps']:>9.0f} req/s  p99 {p99} ms  "
                            f"{d['cpu_us_per_req']:6.1f} µs/req  "
                            f"{d['rss_mb']:5.1f} MB  other {d['other_cores']:.2f} cores"
                            f"{flag}",
                            flush=True,
                        )
                    else:
                        print(f"{head} FAILED: {run.reason}", flush=True)
                        if run.log_tail:
                            print("  server output (last lines):", flush=True)
                            print("    " + run.log_tail.replace("\n", "\n    "), flush=True)
        except KeyboardInterrupt:
            print("\ninterrupted; servers stopped", file=sys.stderr)
            return 130
        finally:
            stop_all_servers()

    report, problems = build_report(args, servers, workloads, results, started)
    print("\n" + report, flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"results-{started:%Y%m%d-%H%M%S}.md"
    path.write_text(report + "\n")
    print(f"\nwritten to {path}")
    for problem in problems:
        print(f"!!! {problem}", file=sys.stderr)
    ferrocorn_runs = [r for (_, s), rs in results.items() if s == "ferrocorn" for r in rs]
    if any(not r.ok or r.errors for r in ferrocorn_runs):
        print("!!! ferrocorn failed to serve cleanly (see above)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
