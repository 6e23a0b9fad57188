"""The master's process model: signals, supervision, recycling, hung workers."""

import os
import signal
import threading
import time

import httpx
import pytest

from tests.server import Server, alive, raw_exchange


class Load:
    """Requests on fresh connections from a background thread, bounded in time, counting
    every failure."""

    def __init__(self, server: Server, path: str = "/pid"):
        self.url = f"{server.url}{path}"
        self.ok = 0
        self.failures: list[str] = []
        self.pids: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        deadline = time.monotonic() + 60
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                r = httpx.get(self.url, headers={"Connection": "close"}, timeout=10)
                if r.status_code == 200:
                    self.ok += 1
                    self.pids.add(int(r.text))
                else:
                    self.failures.append(f"status {r.status_code}")
            except httpx.HTTPError as exc:
                self.failures.append(repr(exc))

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(15)


def test_ttin_ttou_change_the_worker_count():
    with Server("basic:app", "--workers", "2") as s:
        first = s.wait_for_workers(2)
        s.signal(signal.SIGTTIN)
        three = s.wait_for_workers(3)
        assert first < three
        # Signals sent back to back coalesce in the kernel: one at a time.
        s.signal(signal.SIGTTOU)
        s.wait_for_workers(2)
        s.signal(signal.SIGTTOU)
        s.wait_for_workers(1)
        s.signal(signal.SIGTTOU)  # the last worker stays
        time.sleep(0.5)
        assert len(s.wait_for_workers(1)) == 1
        assert httpx.get(f"{s.url}/count").status_code == 200


def test_hup_rolling_restart_loses_no_request():
    with Server("basic:app", "--workers", "2") as s:
        old = s.wait_for_workers(2)
        with Load(s) as load:
            time.sleep(0.5)
            s.signal(signal.SIGHUP)
            new = s.wait_for_workers(2, exclude=old)
            time.sleep(0.5)
        assert load.failures == []
        assert load.ok > 20
        assert load.pids & old and load.pids & new  # served by both generations


@pytest.mark.parametrize(
    "flags",
    [
        ("--max-requests", "25"),
        ("--limit-max-requests", "20", "--limit-max-requests-jitter", "10"),
    ],
)
def test_max_requests_recycles_without_failures(flags):
    with Server("basic:app", "--workers", "2", *flags) as s:
        old = s.wait_for_workers(2)
        with Load(s) as load:
            deadline = time.monotonic() + 20
            while not (s.worker_pids() - old) and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(1)
        assert load.failures == []
        assert "reached --max-requests" in s.stderr_text()
        assert s.worker_pids() - old


def test_killed_worker_is_replaced_while_others_serve():
    with Server("basic:app", "--workers", "2") as s:
        victim, survivor = sorted(s.wait_for_workers(2))
        os.kill(victim, signal.SIGKILL)
        assert httpx.get(f"{s.url}/count").status_code == 200
        pids = s.wait_for_workers(2, exclude={victim})
        assert survivor in pids
        s.wait_for_log(rf"Worker \[{victim}\] was killed by signal 9; starting a new one")


@pytest.mark.parametrize("route", ["hang", "spin"])
def test_hung_worker_is_dumped_and_replaced(route):
    with Server("basic:app", "--timeout", "2") as s:
        (hung,) = s.wait_for_workers(1)
        with s.connect(timeout=15) as sock:
            raw = raw_exchange(sock, f"GET /{route}?60 HTTP/1.1\r\nHost: h\r\n\r\n".encode(), 8)
        assert not raw.startswith(b"HTTP/1.1 200")
        s.wait_for_log("timed out: its event loop has been blocked")
        # The stack names the line where the app hangs, even while it holds the GIL.
        s.wait_for_log(rf'File ".*basic\.py", line \d+ in {route}')
        s.wait_for_workers(1, exclude={hung})
        assert httpx.get(f"{s.url}/count").status_code == 200


def test_master_sigkill_leaves_no_worker_behind():
    s = Server("basic:app", "--workers", "2").start()
    try:
        workers = s.wait_for_workers(2)
        os.kill(s.pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while any(alive(p) for p in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(alive(p) for p in workers)
    finally:
        s.stop()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGQUIT])
def test_stop_signals_exit_zero(sig):
    s = Server("basic:app", "--workers", "2").start()
    try:
        workers = s.wait_for_workers(2)
        s.signal(sig)
        assert s.wait() == 0
        assert not any(alive(p) for p in workers)
    finally:
        s.stop()


def test_sigterm_to_a_worker_drains_it_and_it_is_replaced():
    with Server("basic:app") as s:
        (worker,) = s.wait_for_workers(1)
        with s.connect() as sock:
            sock.sendall(b"GET /slow?1 HTTP/1.1\r\nHost: h\r\n\r\n")
            time.sleep(0.3)
            os.kill(worker, signal.SIGTERM)
            sock.settimeout(5)
            assert sock.recv(4096).startswith(b"HTTP/1.1 200 OK")
        s.wait_for_workers(1, exclude={worker})


def test_pid_file(tmp_path):
    pid_file = tmp_path / "ferrocorn.pid"
    s = Server("basic:app", "--pid", str(pid_file)).start()
    try:
        assert int(pid_file.read_text()) == s.pid
        s.signal(signal.SIGTERM)
        assert s.wait() == 0
        assert not pid_file.exists()
    finally:
        s.stop()


def _holds_open(pid: int, path) -> bool:
    """Whether process `pid` has `path` (the file now at that name) open."""
    fd_dir, wanted = f"/proc/{pid}/fd", os.stat(path)
    try:
        return any(os.path.samestat(os.stat(f"{fd_dir}/{fd}"), wanted) for fd in os.listdir(fd_dir))
    except FileNotFoundError:
        return False


def test_log_files_and_usr1_reopen(tmp_path):
    error_log, access_log = tmp_path / "error.log", tmp_path / "access.log"
    args = ("--error-logfile", str(error_log), "--access-logfile", str(access_log))
    with Server("basic:app", *args, error_log=error_log) as s:
        httpx.get(f"{s.url}/count?before")
        assert "GET /count?before" in access_log.read_text()
        assert "ferrocorn ready" in error_log.read_text()
        # logrotate moves the files away, then asks for new ones.
        error_log.rename(tmp_path / "error.log.1")
        access_log.rename(tmp_path / "access.log.1")
        s.signal(signal.SIGUSR1)
        deadline = time.monotonic() + 5
        while not (error_log.exists() and access_log.exists()):
            assert time.monotonic() < deadline, "log files were not reopened"
            time.sleep(0.05)
        # The workers reopen theirs when the master's message reaches them on the
        # control channel: wait until each holds the new file open.
        while not all(_holds_open(pid, access_log) for pid in s.worker_pids()):
            assert time.monotonic() < deadline, "workers did not reopen the access log"
            time.sleep(0.05)
        httpx.get(f"{s.url}/count?after")
        assert "GET /count?after" in access_log.read_text()
        assert "GET /count?after" not in (tmp_path / "access.log.1").read_text()
        assert "Reopened log files" in error_log.read_text()
