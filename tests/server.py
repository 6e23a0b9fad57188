"""Start real ferrocorn processes for tests and talk to them over loopback."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

APPS_DIR = Path(__file__).parent / "apps"
READY = "ferrocorn ready"
# Servers started and not yet stopped: tests/conftest.py shows their logs when a test
# fails.
_live: set[Server] = set()


def live_servers() -> list[Server]:
    return list(_live)


class Server:
    """A ferrocorn master process with its output collected in the background."""

    def __init__(
        self,
        app: str,
        *args: str,
        cwd: Path = APPS_DIR,
        env: dict | None = None,
        error_log: Path | None = None,
        cmd: list[str] | None = None,
        pass_fds: tuple[int, ...] | list[int] = (),
    ):
        # With --error-logfile the server logs there instead of stderr.
        self.error_log = error_log
        # `cmd` replaces the command line (a Python program that serves, say).
        cmd = cmd or [sys.executable, "-m", "ferrocorn", app, "--port", "0", *args]
        self.proc = subprocess.Popen(
            cmd,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
            env={**os.environ, **(env or {})},
            pass_fds=pass_fds,
        )
        self._out: list[str] = []
        self._err: list[str] = []
        self._lock = threading.Lock()
        for stream, sink in ((self.proc.stdout, self._out), (self.proc.stderr, self._err)):
            threading.Thread(target=self._pump, args=(stream, sink), daemon=True).start()
        self.url = ""
        self.host = ""
        self.port = 0
        _live.add(self)

    def _pump(self, stream, sink: list[str]) -> None:
        for line in stream:
            with self._lock:
                sink.append(line)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stderr_text(self) -> str:
        if self.error_log is not None:
            return self.error_log.read_text() if self.error_log.exists() else ""
        with self._lock:
            return "".join(self._err)

    def stdout_text(self) -> str:
        with self._lock:
            return "".join(self._out)

    def wait_for_log(self, pattern: str, timeout: float = 10.0, stdout: bool = False) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.stdout_text() if stdout else self.stderr_text()
            match = re.search(pattern, text)
            if match:
                return match
            if self.proc.poll() is not None and not re.search(pattern, text):
                time.sleep(0.2)  # let the pump threads catch up once more
                text = self.stdout_text() if stdout else self.stderr_text()
                match = re.search(pattern, text)
                if match:
                    return match
                raise AssertionError(f"server exited ({self.proc.returncode}):\n{text}")
            time.sleep(0.02)
        raise AssertionError(f"{pattern!r} not logged within {timeout}s:\n{self.stderr_text()}")

    def start(self, timeout: float = 20.0) -> Server:
        running = self.wait_for_log(r"running on (https?://\S+|unix socket \S+)", timeout)
        target = running.group(1)
        if target.startswith(("http://", "https://")):
            self.url = target
            hostport = target.split("://", 1)[1]
            self.host, _, port = hostport.rpartition(":")
            self.host = self.host.strip("[]")
            self.port = int(port)
        self.wait_for_log(READY, timeout)
        return self

    def connect(self, timeout: float = 5.0) -> socket.socket:
        return socket.create_connection((self.host, self.port), timeout=timeout)

    def worker_pids(self) -> set[int]:
        """The master's live children (its workers)."""
        return children_of(self.proc.pid)

    def wait_for_workers(self, count: int, exclude: set[int] = frozenset(), timeout=20.0):
        """Wait until exactly `count` workers run, none of them in `exclude`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pids = self.worker_pids()
            if len(pids) == count and not pids & exclude:
                return pids
            time.sleep(0.1)
        raise AssertionError(f"workers {self.worker_pids()} != {count} new:\n{self.stderr_text()}")

    def signal(self, sig: int) -> None:
        os.kill(self.proc.pid, sig)

    def wait(self, timeout: float = 15.0) -> int:
        return self.proc.wait(timeout)

    def stop(self, timeout: float = 15.0) -> int | None:
        _live.discard(self)
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        # Never leave a worker behind, whatever happened.
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(5)
        return self.proc.returncode

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def children_of(ppid: int) -> set[int]:
    pids = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == ppid and fields[0] != "Z":
            pids.add(int(entry))
    return pids


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def run_to_exit(app: str, *args: str, timeout: float = 20.0) -> subprocess.CompletedProcess:
    """Run a server that is expected to exit by itself (boot failure, --help...)."""
    return subprocess.run(
        [sys.executable, "-m", "ferrocorn", app, "--port", "0", *args],
        cwd=APPS_DIR,
        capture_output=True,
        text=True,
        timeout=timeout,
        start_new_session=True,
    )


def raw_exchange(sock: socket.socket, data: bytes, wait: float = 1.0) -> bytes:
    """Send bytes, then read until the server closes or `wait` seconds pass quietly."""
    sock.sendall(data)
    sock.settimeout(wait)
    chunks = []
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                chunks.append(b"<EOF>")
                break
            chunks.append(chunk)
    except TimeoutError:
        pass
    except ConnectionResetError:
        chunks.append(b"<RST>")
    return b"".join(chunks)


def plain_python_contract(launcher: list[str] = (), probes: list[str] = ()) -> dict:
    """What tests/apps/contract_probe.py reports under plain `python` (started through
    `launcher`, when given): the reference the contract tests compare every worker with.
    `probes`: only these (own_signals, exec_child_signals, exit_codes...)."""
    import json

    out = subprocess.run(
        [*launcher, sys.executable, "contract_probe.py", *probes],
        cwd=APPS_DIR,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(out.stdout)
