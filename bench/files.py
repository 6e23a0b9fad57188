"""File serving: a Starlette FileResponse of 1 MiB and of 100 MiB, from ferrocorn and
granian (both offer http.response.pathsend, so Starlette hands them the path), and
uvicorn when asked (no pathsend: Starlette reads the file in 64 KiB chunks).

    bench/.venv/bin/python bench/files.py                 # 3 rounds, 10 s each
    bench/.venv/bin/python bench/files.py --rounds 1 --duration 5 --servers ferrocorn,granian

Uses run.py's server commands, /proc accounting and wrk parsing; prints req/s, MB/s and
server CPU per request (and per MiB), median over rounds, with ratios against granian.
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
import run  # noqa: E402  (bench/run.py: server commands, accounting, wrk)

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
    status, body = run.http_request(port, path, timeout=30)
    if status != 200 or len(body) != size:
        raise run.RunFailed(f"GET {path}: {status}, {len(body)} bytes instead of {size}")


def measure(server: str, size_name: str, args, files: Path, logdir: Path) -> dict | None:
    path, size, connections = SIZES[size_name]
    port = run.free_port()
    log = logdir / f"files-{server}-{size_name}.log"
    env = dict(os.environ, PYTHONPATH=str(run.ROOT), FERROCORN_BENCH_FILES=str(files))
    with log.open("wb") as logfile:
        proc = subprocess.Popen(
            run.server_command(server, APP, port),
            cwd=run.ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=logfile,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    run.LIVE[proc.pid] = proc
    try:
        ready_line = log if server == "ferrocorn" else None
        run.wait_ready(port, "/1m", proc, args.boot_timeout, ready_line)
        check(port, path, size)
        url = f"http://{run.HOST}:{port}{path}"
        run.run_wrk(url, 2, connections, None, args.threads)  # warm-up
        cpu0, busy0, kids0 = (
            run.tree_cpu_seconds(proc.pid),
            run.machine_busy_seconds(),
            run.children_cpu_seconds(),
        )
        t0 = time.monotonic()
        result = run.run_wrk(url, args.duration, connections, None, args.threads)
        elapsed = time.monotonic() - t0
        cpu = run.tree_cpu_seconds(proc.pid) - cpu0
        busy, wrk_cpu = run.machine_busy_seconds() - busy0, run.children_cpu_seconds() - kids0
        if proc.poll() is not None:
            raise run.RunFailed(f"server died (status {proc.returncode})")
        requests = max(result["requests"], 1)
        return {
            "rps": result["rps"],
            "mbps": result["requests"] * size / elapsed / 1e6,
            "cpu_us_per_req": cpu / requests * 1e6,
            "cpu_ms_per_gb": cpu / (requests * size / 1e9) * 1e3,
            "p99_ms": result["p99_ms"],
            "errors": result["errors"],
            "cores": cpu / elapsed,
            "wrk_cores": wrk_cpu / elapsed,
            # Whatever else kept the CPUs busy meanwhile (other processes, this script).
            "other_cores": max(0.0, busy - cpu - wrk_cpu) / elapsed,
        }
    except (run.RunFailed, OSError, subprocess.TimeoutExpired) as exc:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-10:])
        print(f"{server} {size_name}: FAILED: {exc}\n{tail}", file=sys.stderr)
        return None
    finally:
        run.stop_server(proc)


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
    signal.signal(signal.SIGTERM, run._terminate)
    files = (
        Path(os.environ.get("FERROCORN_BENCH_FILES", tempfile.gettempdir()))
        / "ferrocorn-bench-files"
    )
    files.mkdir(exist_ok=True)
    make_files(files)
    logdir = run.HERE / "out"
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
        run.stop_all_servers()

    def med(size_name, server, key):
        runs = results.get((size_name, server))
        return statistics.median(r[key] for r in runs) if runs else None

    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    ferrocorn = run.dist_versions(run.FERROCORN_PYTHON, run.FERROCORN_DISTS)
    print(f"# File serving (Starlette FileResponse), {stamp}")
    load = f"wrk -t{args.threads}, median of rounds"
    print(f"{args.rounds} rounds x {args.duration} s, {load}; {run.machine()}")
    print(f"peers: {run.dist_versions(str(run.PEERS_BIN / 'python'), run.PEER_DISTS)}")
    print(f"ferrocorn: {ferrocorn}, {run.git_revision()}")
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
                run.fmt_ratio(rps, base_rps), run.fmt_ratio(cpu, base_cpu),
            ]  # fmt: skip
            print("| " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
