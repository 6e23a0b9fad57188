"""The zero-failure restart table (issue 13): the same restart scenario against
ferrocorn and its peers, counting every request lost by clients on persistent
connections that never retry (bench/restart_load.py).

    .venv/bin/python bench/restarts.py                       # every server and scenario
    .venv/bin/python bench/restarts.py --servers ferrocorn --duration 15

Scenario: `tests/apps/drain_app.py` (a 5 s lifespan startup), 1 and 2 workers, 8
HTTP/1.1 keep-alive connections plus 4 HTTP/2 (h2c, 4 streams each) where the server
speaks cleartext HTTP/2 (ferrocorn, granian), for `--duration` seconds, during which:

- hup: one SIGHUP to the master at 1 s (a graceful rolling restart where the server
  has one);
- recycle: the server's own recycling: `--max-requests 400` (ferrocorn, gunicorn),
  `--limit-max-requests 400` (uvicorn); granian has no request-count recycling and its
  --workers-lifetime is 60 s at least, so it recycles by `--workers-max-rss 1` with
  `--rss-sample-interval 3` (every worker is over 1 MiB: replaced every few seconds).

Run with the project's .venv python (the client needs hpack/hyperframe from `h2`); the
peers come from bench/.venv (bench/run.sh makes it) or `--peers-bin`.
"""

from __future__ import annotations

import argparse
import datetime
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
APPS = ROOT / "tests" / "apps"
sys.path.insert(0, str(HERE))
from restart_load import run_load  # noqa: E402

HOST = "127.0.0.1"
SERVERS = ("ferrocorn", "uvicorn", "gunicorn", "granian")
H2_SERVERS = {"ferrocorn", "granian"}


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def command(server: str, workers: int, scenario: str, port: int, peers: Path) -> list[str]:
    w = str(workers)
    recycle = scenario == "recycle"
    if server == "ferrocorn":
        extra = ["--max-requests", "400"] if recycle else []
        return [sys.executable, "-m", "ferrocorn", "drain_app:app", "--host", HOST,
                "--port", str(port), "--workers", w, "--no-access-log", *extra]  # fmt: skip
    if server == "uvicorn":
        extra = ["--limit-max-requests", "400"] if recycle else []
        return [str(peers / "uvicorn"), "drain_app:app", "--host", HOST, "--port", str(port),
                "--workers", w, "--no-access-log", "--log-level", "warning", *extra]  # fmt: skip
    if server == "gunicorn":
        extra = ["--max-requests", "400"] if recycle else []
        return [str(peers / "gunicorn"), "-k", "uvicorn_worker.UvicornWorker", "-w", w,
                "-b", f"{HOST}:{port}", "--log-level", "warning", *extra,
                "drain_app:app"]  # fmt: skip
    if server == "granian":
        extra = ["--workers-max-rss", "1", "--rss-sample-interval", "3"] if recycle else []
        return [str(peers / "granian"), "--interface", "asgi", "--host", HOST, "--port",
                str(port), "--workers", w, "--no-ws", "--log-level", "warning", *extra,
                "drain_app:app"]  # fmt: skip
    raise ValueError(server)


def wait_serving(port: int, proc: subprocess.Popen, timeout: float = 40.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(f"http://{HOST}:{port}/", timeout=2) as r:
                if r.status == 200:
                    return True
        except OSError:
            time.sleep(0.2)
    return False


def run_one(server: str, workers: int, scenario: str, duration: float, peers: Path) -> dict:
    port = free_port()
    log = open(HERE / "out" / f"restarts-{server}-{workers}w-{scenario}.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(
        command(server, workers, scenario, port, peers),
        cwd=APPS,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "DRAIN_APP_STARTUP": "5"},
        start_new_session=True,
    )
    try:
        if not wait_serving(port, proc):
            return {"error": "did not start"}

        def hup():
            if scenario == "hup":
                time.sleep(1)
                os.kill(proc.pid, signal.SIGHUP)

        result = run_load(
            HOST,
            port,
            http1=8,
            http2=4 if server in H2_SERVERS else 0,
            duration=duration,
            during=hup,
        )
        result["alive"] = proc.poll() is None
        return result
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(15)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
        log.close()


def cell(result: dict, protocol: str) -> str:
    if "error" in result:
        return result["error"]
    tally = result.get(protocol)
    if tally is None:
        return "n/a"
    text = f"**{tally['failed']}** / {tally['ok'] + tally['failed']}"
    if tally["errors"]:
        text += " (" + ", ".join(f"{k} {v}" for k, v in sorted(tally["errors"].items())) + ")"
    return text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", default=",".join(SERVERS))
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--scenarios", default="hup,recycle")
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--peers-bin", type=Path, default=HERE / ".venv" / "bin")
    args = parser.parse_args()
    (HERE / "out").mkdir(exist_ok=True)
    rows = []
    for scenario in args.scenarios.split(","):
        for workers in map(int, args.workers.split(",")):
            for server in args.servers.split(","):
                result = run_one(server, workers, scenario, args.duration, args.peers_bin)
                row = (scenario, workers, server, cell(result, "http1"), cell(result, "http2"))
                alive = result.get("alive", False)
                seen = max(
                    (t.get("servers_seen", 0) for t in result.values() if isinstance(t, dict)),
                    default=0,
                )
                rows.append((*row, seen, "yes" if alive else "**no**"))
                print(" | ".join(map(str, rows[-1])), file=sys.stderr, flush=True)
    print(f"Run {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, "
          f"`{' '.join(['bench/restarts.py', *sys.argv[1:]])}`\n")  # fmt: skip
    print(
        "| scenario | workers | server | HTTP/1.1 failed / sent | HTTP/2 failed / sent "
        "| worker pids that answered | still serving |"
    )
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(map(str, row)) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
