"""Which servers and workloads the benchmark knows, and how each server is started.

The paths (ferrocorn's interpreter, bench/.venv's peers, bench/tools), the workloads
(app, path, load tool), who serves what, the one request checked before a run, and
the command line of each server. Nothing here starts a process but build_tools.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# bench/.venv, or the one run.sh made for $BENCH_PYTHON.
PEERS_BIN = Path(os.environ.get("BENCH_VENV", HERE / ".venv")) / "bin"
FERROCORN_PYTHON = os.environ.get("FERROCORN_PYTHON", str(ROOT / ".venv" / "bin" / "python"))
HOST = "127.0.0.1"

ALL_SERVERS = ("ferrocorn", "granian", "uvicorn", "gunicorn", "ceiling", "ferrocorn-runner")
# What the access log costs, run only when named (--servers ferrocorn-noaccess,
# ferrocorn-access,ferrocorn-access-json): ferrocorn-noaccess is ferrocorn as above (no
# access log, like every peer here); the others write uvicorn's line or the JSON line
# for every request into the server's log file under bench/out.
ACCESS_LOG_SERVERS = {
    "ferrocorn-noaccess": ["--no-access-log"],
    "ferrocorn-access": ["--access-log"],
    "ferrocorn-access-json": ["--access-log-json"],
}
# What --metrics costs, run only when named (--servers ferrocorn-noaccess,ferrocorn-metrics):
# the same server counting every request for Prometheus (the metrics port is picked by
# the OS and nobody scrapes it during the run; a scrape costs the master, not a worker).
METRICS_SERVERS = {
    "ferrocorn-metrics": ["--no-access-log", "--metrics", "--metrics-port", "0"],
}
# What the periodic heap trim costs (--malloc-trim-interval, issue #14), run only when
# named (--servers ferrocorn-noaccess,ferrocorn-notrim): the same server never trimming.
TRIM_SERVERS = {
    "ferrocorn-notrim": ["--no-access-log", "--malloc-trim-interval", "0"],
}
ACCESS_LOG_SERVERS.update(METRICS_SERVERS)
ACCESS_LOG_SERVERS.update(TRIM_SERVERS)
ACCESS_LOG_WORKLOADS = {"hello", "fastapi", "hello2w"}
# ferrocorn with --task-impl create-task (a Task per request made by loop.create_task,
# not started eagerly on Python 3.12+), run only when named.
KNOWN_SERVERS = (*ALL_SERVERS, *ACCESS_LOG_SERVERS, "ferrocorn-create-task")
# ferrocorn's opt-in request runners (--task-impl runner) and create-task, measured where
# they differ: requests that don't suspend.
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
    # WSGI (issue #15): ferrocorn --interface wsgi, granian --interface wsgi, gunicorn gthread.
    "wsgi-hello": ("examples.wsgi_hello:app", "/", "wrk", None),
    "wsgi-flask": ("examples.flask_app:app", "/json", "wrk", None),
    "wsgi-django": ("examples.django_bench:application", "/json", "wrk", None),
    "wsgi-file": ("examples.wsgi_files:app", "/10m", "wrk", None),
}
WSGI_WORKLOADS = {"wsgi-hello", "wsgi-flask", "wsgi-django", "wsgi-file"}
# Threads per worker for the WSGI servers: ferrocorn's default (docs/wsgi.md), given to
# gunicorn's gthread worker and granian's blocking threads too, so all run alike.
WSGI_THREADS = "8"
# Workers per server; every workload not named here runs one. hello2w is hello world with
# two workers, to read next to hello (the "2 workers vs 1" line of the report).
WORKERS = {"hello2w": 2}
# Who can serve what: uvicorn and gunicorn have no HTTP/2; the ceiling only says hello.
SERVES = {
    "h2hello": {"ferrocorn", "granian", "ceiling"},
    "hello": set(ALL_SERVERS),
    "hello2w": {"ferrocorn", "granian"},
    **{w: {"ferrocorn", "granian", "gunicorn"} for w in WSGI_WORKLOADS},
}
PYTHON_SERVERS = {"ferrocorn", "granian", "uvicorn", "gunicorn"}


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
    "wsgi-hello": Check("GET", b"", b"Hello, world!"),
    "wsgi-flask": Check("GET", b"", {"message": "Hello, world!", "items": [1, 2, 3]}),
    "wsgi-django": Check("GET", b"", {"message": "Hello, world!", "items": [1, 2, 3]}),
    "wsgi-file": Check("GET", b"", bytes(range(256)) * (10 * 4096)),
}
ALIASES = {"echo10k": "echo", "json": "fastapi"}


def serves(server: str, workload: str) -> bool:
    if server in ("ferrocorn-runner", "ferrocorn-create-task"):
        return workload in RUNNER_WORKLOADS
    if server in ACCESS_LOG_SERVERS:
        return workload in ACCESS_LOG_WORKLOADS
    return server in SERVES.get(workload, PYTHON_SERVERS)


def is_ferrocorn(server: str) -> bool:
    return server.startswith("ferrocorn")


def server_command(server: str, app: str, port: int, workload: str = "hello") -> list[str]:
    """The command line for one server: one worker (WORKERS says when more), no access log
    (but in the ACCESS_LOG_SERVERS variants), uvloop everywhere."""
    workers = str(WORKERS.get(workload, 1))
    if workload in WSGI_WORKLOADS:
        return wsgi_command(server, app, port, workers)
    if server == "ceiling":
        return [str(TOOLS_BIN / "ceiling"), str(port)]
    if is_ferrocorn(server):
        # Default log level (info): "ferrocorn ready" is an info line; it logs nothing per
        # request without the access log.
        runner = {
            "ferrocorn-runner": ["--task-impl", "runner"],
            "ferrocorn-create-task": ["--task-impl", "create-task"],
        }.get(server, [])
        access = ACCESS_LOG_SERVERS.get(server, ["--no-access-log"])
        return [
            FERROCORN_PYTHON, "-m", "ferrocorn", app,
            "--host", HOST, "--port", str(port), "--workers", workers,
            *access, "--loop", "uvloop", *runner,
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


def wsgi_command(server: str, app: str, port: int, workers: str) -> list[str]:
    """A WSGI server: WSGI_THREADS threads per worker, no access log."""
    if is_ferrocorn(server):
        return [
            FERROCORN_PYTHON, "-m", "ferrocorn", app, "--interface", "wsgi",
            "--host", HOST, "--port", str(port), "--workers", workers,
            "--threads", WSGI_THREADS, "--no-access-log",
        ]  # fmt: skip
    if server == "granian":
        return [
            str(PEERS_BIN / "granian"), "--interface", "wsgi",
            "--host", HOST, "--port", str(port), "--workers", workers,
            "--blocking-threads", WSGI_THREADS, "--log-level", "warning", app,
        ]  # fmt: skip
    if server == "gunicorn":
        return [
            str(PEERS_BIN / "gunicorn"), "-k", "gthread", "--threads", WSGI_THREADS,
            "-w", workers, "-b", f"{HOST}:{port}", "--log-level", "warning", app,
        ]  # fmt: skip
    raise ValueError(server)


def build_tools() -> None:
    """Build bench/tools (the ceiling server and the WebSocket load client) once."""
    if (TOOLS_BIN / "ceiling").exists() and (TOOLS_BIN / "wsload").exists():
        return
    print("== building bench/tools (cargo build --release)", flush=True)
    subprocess.run(
        ["cargo", "build", "--release", "--quiet", "--manifest-path", str(TOOLS / "Cargo.toml")],
        check=True,
    )
