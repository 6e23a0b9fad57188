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
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from lifecycle import (
    RunFailed,
    check_answer,
    free_port,
    h2_request,
    http_request,
    start_server,
    stop_all_servers,
    stop_server,
    terminate,
    wait_ready,
)
from load import run_load, run_wsload
from procstats import cpu_during, process_rss_mb, tree_rss_mb
from report import build_report
from servers import (
    ALIASES,
    ALL_SERVERS,
    CHECKS,
    FERROCORN_PYTHON,
    HERE,
    KNOWN_SERVERS,
    ROOT,
    WORKLOADS,
    build_tools,
    is_ferrocorn,
    server_command,
    serves,
)


@dataclass
class Run:
    """One run of one server on one workload: whether it served, why not, the last lines
    of its output when it did not, and the figures (keys of build_report's table)."""

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
    proc = start_server(server_command(server, app, port, workload), log, env)
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
        result, use = cpu_during(proc.pid, lambda: run_load(workload, port, args.duration, args))
        if proc.poll() is not None:
            raise RunFailed(f"server died during the run (status {proc.returncode})")
        run.data.update(result)
        run.data["loaded_rss_mb"] = tree_rss_mb(proc.pid)
        run.data["cpu_us_per_req"] = use.server / max(result["requests"], 1) * 1e6
        run.data["server_cores"] = use.server_cores
        run.data["wrk_cores"] = use.load_cores
        run.data["other_cores"] = use.other_cores
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
    servers = parse_list(args.servers, KNOWN_SERVERS, what="server")
    workloads = parse_list(args.workloads, WORKLOADS, ALIASES, what="workload")
    if shutil.which("wrk") is None:
        p.error("wrk is not installed (bench/run.sh installs it: apt-get install -y wrk)")

    sys.stdout.reconfigure(errors="backslashreplace")
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started ignoring it
    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGHUP, terminate)
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
