"""A server process's life in a run: start it in its own process group, wait until it
serves, check one real answer, and stop it with everything it spawned.

Every server started here is kept in LIVE until stopped, so that stop_all_servers (at
exit, on a signal, after an error) leaves none behind.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from procstats import start_time, tree_pids
from servers import HOST, ROOT, Check


class RunFailed(RuntimeError):
    pass


LIVE: dict[int, subprocess.Popen] = {}  # every server still running, by pid


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def start_server(command: list[str], log: Path, env: dict) -> subprocess.Popen:
    """Start command from the repository root, its output to log, in its own session."""
    with log.open("wb") as logfile:
        proc = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=logfile,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: killpg reaches every worker
        )
    LIVE[proc.pid] = proc
    return proc


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


def terminate(signum, _frame):
    """Signal handler (SIGTERM, SIGHUP): exit the way an error would."""
    raise SystemExit(128 + signum)  # unwinds through every `finally`, which stops servers


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
