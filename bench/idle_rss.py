"""Idle memory of one WSGI worker, side by side (issue #15): ferrocorn, gunicorn's sync
and gthread workers, granian, and the floor: plain `python` that has imported the app
and does nothing else.

    bench/.venv/bin/python bench/idle_rss.py
    bench/.venv/bin/python bench/idle_rss.py --apps wsgi-flask --rounds 3

Each server starts with one worker, answers one request (so lazy imports are done),
then rests 2 s; then the worker (the process that runs the app: the largest of the
tree) is read from /proc/PID/smaps_rollup:

- RSS: what `ps` shows. A forked worker (gunicorn) doesn't count the pages it shares
  with its master until it touches them; a fresh interpreter (ferrocorn's workers, by
  design: DEVELOPERS.md) maps and counts its own libraries from the start.
- USS: pages only this worker holds (Private_Clean + Private_Dirty), what one more
  worker costs the machine apart from the shared libraries.
- tree PSS: the whole server, every process's proportional share summed: what the
  server costs the machine in all.

The floor row is the least a fresh interpreter with the app can hold: ferrocorn's
worker RSS can come near it, never below it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

from lifecycle import free_port, start_server, stop_all_servers, stop_server, wait_ready
from procstats import tree_pids
from servers import FERROCORN_PYTHON, HERE, HOST, PEERS_BIN, ROOT, WORKLOADS, WSGI_THREADS

APPS = ("wsgi-hello", "wsgi-flask", "wsgi-django")
SERVERS = ("floor", "ferrocorn", "gunicorn-sync", "gunicorn-gthread", "granian")
SETTLE_SECONDS = 2.0


def command(server: str, app: str, port: int) -> list[str]:
    if server == "floor":
        module, _, _ = app.partition(":")
        code = f"import importlib, time; importlib.import_module({module!r}); time.sleep(3600)"
        return [str(PEERS_BIN / "python"), "-c", code]
    if server == "ferrocorn":
        return [
            FERROCORN_PYTHON, "-m", "ferrocorn", app, "--interface", "wsgi", "--host", HOST,
            "--port", str(port), "--threads", WSGI_THREADS, "--no-access-log",
        ]  # fmt: skip
    if server.startswith("gunicorn"):
        kind = server.partition("-")[2]
        threads = ["--threads", WSGI_THREADS] if kind == "gthread" else []
        return [
            str(PEERS_BIN / "gunicorn"), "-k", kind, *threads, "-w", "1",
            "-b", f"{HOST}:{port}", "--log-level", "warning", app,
        ]  # fmt: skip
    if server == "granian":
        return [
            str(PEERS_BIN / "granian"), "--interface", "wsgi", "--host", HOST,
            "--port", str(port), "--blocking-threads", WSGI_THREADS, "--log-level", "warning", app,
        ]  # fmt: skip
    raise ValueError(server)


def rollup_kb(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, _, rest = line.partition(":")
        fields[name] = int(rest.split()[0])
    return fields


def measure(server: str, workload: str, out: Path) -> dict[str, float]:
    app, path = WORKLOADS[workload][0], WORKLOADS[workload][1]
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = start_server(command(server, app, port), out / f"idle-{server}-{workload}.log", env)
    try:
        if server == "floor":
            time.sleep(3.0)  # the import is done well before; nothing to ask
        else:
            wait_ready(port, path, proc)
        time.sleep(SETTLE_SECONDS)
        rollups = {pid: rollup_kb(pid) for pid in tree_pids(proc.pid)}
    finally:
        stop_server(proc)
    worker = max(rollups.values(), key=lambda r: r["Rss"])
    return {
        "rss": worker["Rss"] / 1024,
        "uss": (worker["Private_Clean"] + worker["Private_Dirty"]) / 1024,
        "tree_pss": sum(r["Pss"] for r in rollups.values()) / 1024,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--apps", default=",".join(APPS))
    parser.add_argument("--servers", default=",".join(SERVERS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=HERE / "out")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    apps, servers = args.apps.split(","), args.servers.split(",")
    rows = []
    try:
        for workload in apps:
            for server in servers:
                runs = [measure(server, workload, args.out) for _ in range(args.rounds)]
                median = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
                rows.append((workload, server, median))
                print(
                    f"{workload:12} {server:17} RSS {median['rss']:5.1f}  USS {median['uss']:5.1f}"
                    f"  tree PSS {median['tree_pss']:5.1f} MB",
                    file=sys.stderr,
                    flush=True,
                )
    finally:
        stop_all_servers()
    print(f"\nIdle WSGI worker, median of {args.rounds} (MB; see bench/idle_rss.py)\n")
    print("| app | server | worker RSS | worker USS | whole server PSS |")
    print("|---|---|---:|---:|---:|")
    for workload, server, m in rows:
        print(f"| {workload} | {server} | {m['rss']:.1f} | {m['uss']:.1f} | {m['tree_pss']:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
