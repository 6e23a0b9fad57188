"""Run ferrocorn and its peers on the same apps, interleaved, and print ratios.

Each (round, workload, server) starts the server fresh with one worker, warms it up,
then measures with wrk on loopback. Reported per (workload, server): median req/s and
p99 latency over the rounds, server CPU time per request (user+system of the server's
whole process tree, from /proc: steadier than req/s when wrk shares the 2 cores), and
the RSS of the idle server after boot.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PEERS_BIN = HERE / ".venv" / "bin"
FERROCORN_PYTHON = os.environ.get("FERROCORN_PYTHON", str(ROOT / ".venv" / "bin" / "python"))
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")

WORKLOADS = {
    # name: (app, path, wrk lua script or None)
    "hello": ("examples.hello:app", "/", None),
    "fastapi": ("examples.fastapi_app:app", "/json", None),
    "echo10k": ("examples.echo:app", "/", "post10k"),
}

LUA = {
    "post10k": 'wrk.method = "POST"\nwrk.body = string.rep("x", 10240)\n'
    'wrk.headers["Content-Type"] = "application/octet-stream"\n',
}


def server_command(server: str, app: str, port: int) -> list[str]:
    if server == "ferrocorn":
        return [
            FERROCORN_PYTHON,
            "-m",
            "ferrocorn",
            app,
            "--port",
            str(port),
            "--workers",
            "1",
            "--no-access-log",
            "--log-level",
            "warning",
        ]
    if server == "granian":
        return [
            str(PEERS_BIN / "granian"),
            "--interface",
            "asgi",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--log-level",
            "warning",
            app,
        ]
    if server == "uvicorn":
        return [
            str(PEERS_BIN / "uvicorn"),
            app,
            "--port",
            str(port),
            "--no-access-log",
            "--log-level",
            "warning",
            "--loop",
            "uvloop",
            "--http",
            "httptools",
        ]
    if server == "gunicorn":
        return [
            str(PEERS_BIN / "gunicorn"),
            "-k",
            "uvicorn_worker.UvicornWorker",
            "-w",
            "1",
            "-b",
            f"127.0.0.1:{port}",
            "--log-level",
            "warning",
            app,
        ]
    raise ValueError(server)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tree_pids(root_pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    pids, todo = [], [root_pid]
    while todo:
        pid = todo.pop()
        pids.append(pid)
        todo.extend(children.get(pid, []))
    return pids


def tree_cpu_seconds(root_pid: int) -> float:
    total = 0
    for pid in tree_pids(root_pid):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime + stime
    return total / CLOCK_TICKS


def tree_rss_mb(root_pid: int) -> float:
    total = 0
    for pid in tree_pids(root_pid):
        try:
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1])
        except OSError:
            continue
    return total * PAGE_SIZE / 1e6


def wait_ready(port: int, path: str, proc: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("server did not become ready")


def run_wrk(url: str, seconds: float, connections: int, script: str | None) -> dict:
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", url]
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        if script:
            f.write(LUA[script])
            cmd[1:1] = ["-s", f.name]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    finally:
        os.unlink(f.name)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)\b", out)
    scale = {"us": 1e-3, "ms": 1.0, "s": 1e3}[p99.group(2)]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    bad = (int(non2xx.group(1)) if non2xx else 0) + (
        sum(int(g) for g in errors.groups()) if errors else 0
    )
    return {"rps": rps, "p99_ms": float(p99.group(1)) * scale, "requests": total, "errors": bad}


def measure(server: str, workload: str, args) -> dict:
    app, path, script = WORKLOADS[workload]
    port = free_port()
    proc = subprocess.Popen(
        server_command(server, app, port),
        cwd=ROOT,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_ready(port, path, proc)
        time.sleep(0.5)
        rss = tree_rss_mb(proc.pid)
        url = f"http://127.0.0.1:{port}{path}"
        run_wrk(url, args.warmup, args.connections, script)
        cpu_before = tree_cpu_seconds(proc.pid)
        result = run_wrk(url, args.duration, args.connections, script)
        cpu = tree_cpu_seconds(proc.pid) - cpu_before
        result["cpu_us_per_req"] = cpu / max(result["requests"], 1) * 1e6
        result["rss_mb"] = rss
        return result
    except Exception:
        proc.poll()
        sys.stderr.write(f"{server}/{workload} failed; server stderr:\n")
        if proc.returncode is not None:
            sys.stderr.write(proc.stderr.read())
        raise
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def versions() -> str:
    def pip_version(python: str, name: str) -> str:
        code = f"import importlib.metadata as m; print(m.version({name!r}))"
        out = subprocess.run([python, "-c", code], capture_output=True, text=True)
        return out.stdout.strip() or "?"

    peers = str(PEERS_BIN / "python")
    parts = [f"ferrocorn {pip_version(FERROCORN_PYTHON, 'ferrocorn')}"]
    parts += [f"{n} {pip_version(peers, n)}" for n in ("granian", "uvicorn", "gunicorn")]
    return ", ".join(parts)


def machine() -> str:
    model = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    python = platform.python_version()
    return f"{os.cpu_count()} cores, {model}, Linux {platform.release()}, Python {python}"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--quick", action="store_true", help="CI smoke: 1 round, 2 s, hello only")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=float, default=10)
    p.add_argument("--warmup", type=float, default=2)
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--servers", default="ferrocorn,granian,uvicorn,gunicorn")
    p.add_argument("--workloads", default=",".join(WORKLOADS))
    args = p.parse_args()
    if args.quick:
        args.rounds, args.duration, args.warmup, args.workloads = 1, 2, 1, "hello"
    servers = args.servers.split(",")
    workloads = args.workloads.split(",")

    results: dict[tuple[str, str], list[dict]] = {}
    for rnd in range(args.rounds):
        for workload in workloads:
            for server in servers:
                r = measure(server, workload, args)
                results.setdefault((workload, server), []).append(r)
                print(
                    f"round {rnd + 1} {workload:8} {server:10} {r['rps']:>10.0f} req/s "
                    f"p99 {r['p99_ms']:.2f} ms  {r['cpu_us_per_req']:.1f} us/req",
                    flush=True,
                )

    def med(workload: str, server: str, key: str) -> float:
        return statistics.median(r[key] for r in results[(workload, server)])

    lines = [
        f"Date: {datetime.date.today()}  Machine: {machine()}",
        f"Versions: {versions()}",
        f"wrk -t1 -c{args.connections}, {args.duration:g} s per run, median of {args.rounds} "
        "round(s), one worker each, interleaved",
        "",
        "| workload | server | req/s | p99 ms | CPU us/req | idle RSS MB | req/s vs granian "
        "| CPU vs granian |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    failed = False
    for workload in workloads:
        for server in servers:
            rps = med(workload, server, "rps")
            cpu = med(workload, server, "cpu_us_per_req")
            errors = sum(r["errors"] for r in results[(workload, server)])
            failed |= server == "ferrocorn" and (errors > 0 or rps == 0)
            ratio = cpu_ratio = "-"
            if "granian" in servers:
                ratio = f"{rps / med(workload, 'granian', 'rps'):.2f}x"
                cpu_ratio = f"{cpu / med(workload, 'granian', 'cpu_us_per_req'):.2f}x"
            note = f" ({errors} errors)" if errors else ""
            p99 = med(workload, server, "p99_ms")
            rss = med(workload, server, "rss_mb")
            lines.append(
                f"| {workload} | {server}{note} | {rps:.0f} | {p99:.2f} "
                f"| {cpu:.1f} | {rss:.1f} | {ratio} | {cpu_ratio} |"
            )
    table = "\n".join(lines)
    print("\n" + table)
    out_dir = HERE / "out"
    out_dir.mkdir(exist_ok=True)
    (out_dir / f"results-{datetime.datetime.now():%Y%m%d-%H%M%S}.md").write_text(table + "\n")
    if failed:
        print("ferrocorn served errors or nothing", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
