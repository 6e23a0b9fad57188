"""Helpers for the uvicorn-compatibility tests (test_compat*.py).

Every compat test describes uvicorn's behaviour. They run against ferrocorn; with
FERROCORN_COMPAT_SERVER=uvicorn in the environment they run the same apps under
`python -m uvicorn` instead, to check that they describe uvicorn correctly (uvicorn
0.3x+; install httptools, as uvicorn[standard] does, so that uvicorn's default HTTP
implementation is the one the tests describe).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from tests.server import APPS_DIR, Server

UNDER_UVICORN = os.environ.get("FERROCORN_COMPAT_SERVER") == "uvicorn"


def server_command(app: str, *args: str) -> list[str]:
    module = "uvicorn" if UNDER_UVICORN else "ferrocorn"
    return [sys.executable, "-m", module, app, "--port", "0", *args]


class UvicornServer(Server):
    """The same harness around `python -m uvicorn`: it logs "Uvicorn running on ..."
    once lifespan startup is over, and has no "ferrocorn ready" line."""

    def __init__(self, app: str, *args: str, env: dict | None = None):
        super().__init__(app, env=env, cmd=server_command(app, *args))

    def start(self, timeout: float = 20.0) -> Server:
        running = self.wait_for_log(r"running on (https?://\S+|unix socket \S+)", timeout)
        target = running.group(1)
        if target.startswith("http"):
            self.url = target
            self.host, _, port = target.split("://", 1)[1].rpartition(":")
            self.port = int(port)
        return self


def compat_server(app: str, *args: str, env: dict | None = None) -> Server:
    if UNDER_UVICORN:
        return UvicornServer(app, *args, env=env)
    return Server(app, *args, env=env)


def run_to_exit(app: str, *args: str, env: dict | None = None, unset=(), timeout=30.0):
    """Run a server that should fail to boot; `unset` names variables to remove."""
    environ = {k: v for k, v in {**os.environ, **(env or {})}.items() if k not in unset}
    return subprocess.run(
        server_command(app, *args),
        cwd=APPS_DIR,
        capture_output=True,
        text=True,
        timeout=timeout,
        start_new_session=True,
        env=environ,
    )


def wait_until(predicate, timeout: float = 3.0, interval: float = 0.05):
    """Poll `predicate` until it returns something truthy; return its last value."""
    deadline = time.monotonic() + timeout
    value = predicate()
    while not value and time.monotonic() < deadline:
        time.sleep(interval)
        value = predicate()
    return value


def read_lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []
