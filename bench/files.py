"""File serving: a Starlette FileResponse of 1 MiB and of 100 MiB, from ferrocorn and
granian (both offer http.response.pathsend, so Starlette hands them the path), and
uvicorn when asked (no pathsend: Starlette reads the file in 64 KiB chunks).

    bench/.venv/bin/python bench/files.py                 # 3 rounds, 10 s each
    bench/.venv/bin/python bench/files.py --rounds 1 --duration 5 --servers ferrocorn,granian

Shares run.py's modules (server commands, process lifecycle, /proc accounting, wrk
parsing, environment header); prints req/s, MB/s and server CPU per request (and per
MiB), median over rounds, with ratios against granian.
"""

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
# ruff: noqa: E402 (bench/'s modules below, importable once bench/ is on sys.path)
from lifecycle import (
    RunFailed,
    free_port,
    http_request,
    start_server,
    stop_all_servers,
    stop_server,
    terminate,
    wait_ready,
)
from load import run_wrk
from procstats import cpu_during
from report import (
    FERROCORN_DISTS,
    PEER_DISTS,
    dist_versions,
    fmt_ratio,
    git_revision,
    machine,
)
from servers import FERROCORN_PYTHON, HERE, HOST, PEERS_BIN, ROOT, server_command

APP = "examples.files:app"
# name: (path, size in bytes, wrk connections)
SIZES = {
    "1m": ("/1m", 1 << 20, 16),
    "100m": ("/100m", 100 << 20, 4),
}


def make_files(directory: Path) -> None:
    for name, (_, size, _) in SIZES.items():
        path = directory / f"{name}.bin"
        if not path.exists() or path.stat().st_size != size:
            block = os.urandom(1 << 20)
            with path.open("wb") as f:
                for _ in range(size >> 20):
                    f.write(block)


def check(port: int, path: str, size: int) -> None:
    status, body = http_request(port, path, timeout=30)
    if status != 200 or len(body) != size:
        raise RunFailed(f"GET {path}: {status}, {len(body)} bytes instead of {size}")


def measure(server: str, size_name: str, args, files: Path, logdir: Path) -> dict | None:
    path, size, connections = SIZES[size_name]
    port = free_port()
    log = logdir / f"files-{server}-{size_name}.log"
    env = dict(os.environ, PYTHONPATH=str(ROOT), FERROCORN_BENCH_FILES=str(files))
    proc = start_server(server_command(server, APP, port), log, env)
    try:
        ready_line = log if server == "ferrocorn" else None
        wait_ready(port, "/1m", proc, args.boot_timeout, ready_line)
        check(port, path, size)
        url = f"http://{HOST}:{port}{path}"
        run_wrk(url, 2, connections, None, args.threads)  # warm-up
        result, use = cpu_during(
            proc.pid, lambda: run_wrk(url, args.duration, connections, None, args.threads)
        )
        if proc.poll() is not None:
            raise RunFailed(f"server died (status {proc.returncode})")
        requests = max(result["requests"], 1)
        cpu = use.server
        return {
            "rps": result["rps"],
            "mbps": result["requests"] * size / use.elapsed / 1e6,
            "cpu_us_per_req": cpu / requests * 1e6,
            "cpu_ms_per_gb": cpu / (requests * size / 1e9) * 1e3,
            "p99_ms": result["p99_ms"],
            "errors": result["errors"],
            "cores": use.server_cores,
            "wrk_cores": use.load_cores,
            "other_cores": use.other_cores,
        }
    except (RunFailed, OSError, subprocess.TimeoutExpired) as exc:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-10:])
        print(f"{server} {size_name}: FAILED: {exc}\n{tail}", file=sys.stderr)
        return None
    finally:
        stop_server(proc)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--servers", default="ferrocorn,granian")
    parser.add_argument("--sizes", default="1m,100m")
    parser.add_argument("--boot-timeout", type=float, default=30.0)
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    args = parser.parse_args()
    servers = [s for s in args.servers.split(",") if s]
    sizes = [s for s in args.sizes.split(",") if s]
    signal.signal(signal.SIGTERM, terminate)
    files = (
        Path(os.environ.get("FERROCORN_BENCH_FILES", tempfile.gettempdir()))
        / "ferrocorn-bench-files"
    )
    files.mkdir(exist_ok=True)
    make_files(files)
    logdir = HERE / "out"
    logdir.mkdir(exist_ok=True)
    results: dict[tuple[str, str], list[dict]] = {}
    try:
        for _ in range(args.rounds):
            for size_name in sizes:
                for server in servers:
                    data = measure(server, size_name, args, files, logdir)
                    if data:
                        results.setdefault((size_name, server), []).append(data)
    finally:
        stop_all_servers()

    def med(size_name, server, key):
        runs = results.get((size_name, server))
        return statistics.median(r[key] for r in runs) if runs else None

    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    ferrocorn = dist_versions(FERROCORN_PYTHON, FERROCORN_DISTS)
    print(f"# File serving (Starlette FileResponse), {stamp}")
    load = f"wrk -t{args.threads}, median of rounds"
    print(f"{args.rounds} rounds x {args.duration} s, {load}; {machine()}")
    print(f"peers: {dist_versions(str(PEERS_BIN / 'python'), PEER_DISTS)}")
    print(f"ferrocorn: {ferrocorn}, {git_revision()}")
    print()
    columns = [
        "file", "server", "conns", "req/s", "MB/s", "CPU µs/req", "CPU ms/GB",
        "server cores", "wrk cores", "other cores", "p99 ms", "errors",
        "req/s vs granian", "CPU vs granian",
    ]  # fmt: skip
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for size_name in sizes:
        base_rps = med(size_name, "granian", "rps")
        base_cpu = med(size_name, "granian", "cpu_us_per_req")
        for server in servers:
            if (size_name, server) not in results:
                print(f"| {size_name} | {server} | FAILED |")
                continue
            rps, cpu = med(size_name, server, "rps"), med(size_name, server, "cpu_us_per_req")
            errors = sum(r["errors"] for r in results[(size_name, server)])
            cells = [
                size_name, server, str(SIZES[size_name][2]), f"{rps:.1f}",
                f"{med(size_name, server, 'mbps'):.0f}", f"{cpu:.0f}",
                f"{med(size_name, server, 'cpu_ms_per_gb'):.0f}",
                f"{med(size_name, server, 'cores'):.2f}",
                f"{med(size_name, server, 'wrk_cores'):.2f}",
                f"{med(size_name, server, 'other_cores'):.2f}",
                f"{med(size_name, server, 'p99_ms'):.1f}", str(errors),
                fmt_ratio(rps, base_rps), fmt_ratio(cpu, base_cpu),
            ]  # fmt: skip
            print("| " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
