"""A ferrocorn master started as a child process, watched from threads.

Used by `ferrocorn.Server` (async), `ferrocorn.testing` and `ferrocorn check` (sync).
The parent process keeps plain-python state: no signal handler, no SIGCHLD, no event
loop machinery; a thread reads the child's output (the master's log lines say where it
listens and when every worker is ready) and another waits for its exit.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable

RUNNING = re.compile(
    r"ferrocorn running on (unix socket .+?|socket fd \d+|\S+) \(Press CTRL\+C to quit\)$"
)
READY = re.compile(r"ferrocorn ready: (\d+) worker\(s\) \[([\d, ]*)\]")
# The level name may be coloured (--use-colors).
PREFIX = re.compile(r"^(?:\x1b\[\d+m)?(TRACE|DEBUG|INFO|WARNING|ERROR|CRITICAL)(?:\x1b\[0m)?:\s")
LEVELS = ["trace", "debug", "info", "warning", "error", "critical"]
# How long output may still come after the master exits (a child the app started may
# hold the pipes open).
DRAIN_SECONDS = 1.0


class StartupFailed(RuntimeError):
    """The server exited before it was ready; the message has its exit code and reason."""

    def __init__(self, message: str, exit_code: int | None, log: str) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.log = log


class Master:
    """`python -m ferrocorn._child` with its log parsed and, optionally, forwarded.

    `argv` is the command line without `--log-level`; `log_level` is the level the
    caller asked for: the child logs at least at "info" (the readiness lines are info
    lines) and lines below `log_level` are not forwarded. With `error_logfile` the log
    is read back from that file instead of stderr.
    """

    def __init__(
        self,
        argv: list[str],
        *,
        log_level: str = "info",
        forward: bool = True,
        error_logfile: str | None = None,
        on_ready: Callable[[], None] | None = None,
        on_exit: Callable[[], None] | None = None,
        pass_fds: tuple[int, ...] = (),
    ) -> None:
        self.argv = argv
        self.pass_fds = pass_fds  # kept open in the child under the same numbers
        self.forward = forward
        self.min_forward = LEVELS.index(log_level)
        self.error_logfile = error_logfile
        self.on_ready = on_ready
        self.on_exit = on_exit
        self.listeners: list[str] = []
        self.worker_pids: list[int] = []
        self.ready = threading.Event()
        self.exited = threading.Event()
        self.exit_code: int | None = None
        self._log: list[str] = []
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._parent_fd: int | None = None
        self._forwarding = True  # the level of the last prefixed line was forwarded

    # ----------------------------------------------------------------- starting
    def start(self) -> None:
        level = LEVELS[min(self.min_forward, LEVELS.index("info"))]
        argv = [*self.argv, "--log-level", level]
        offset = 0
        if self.error_logfile is not None:
            try:
                offset = os.path.getsize(self.error_logfile)
            except OSError:
                offset = 0
        # The child holds the read end; when this process ends, the master stops.
        read_fd, self._parent_fd = os.pipe()
        flags = subprocess._args_from_interpreter_flags()  # type: ignore[attr-defined]
        try:
            self._proc = subprocess.Popen(
                [sys.executable, *flags, "-m", "ferrocorn._child", str(read_fd), *argv],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                pass_fds=(read_fd, *self.pass_fds),
            )
        except BaseException:
            os.close(self._parent_fd)
            self._parent_fd = None
            raise
        finally:
            os.close(read_fd)
        pumps = [
            self._thread(self._pump, self._proc.stdout, False, False),
            self._thread(self._pump, self._proc.stderr, True, self.error_logfile is None),
        ]
        if self.error_logfile is not None:
            pumps.append(self._thread(self._tail, self.error_logfile, offset))
        self._thread(self._wait, pumps)

    @staticmethod
    def _thread(target: Callable[..., None], *args: object) -> threading.Thread:
        thread = threading.Thread(target=target, args=args, name="ferrocorn-server", daemon=True)
        thread.start()
        return thread

    # ------------------------------------------------------------------ reading
    def _pump(self, stream, stderr: bool, log: bool) -> None:
        """Forward one output stream (stdout: access log; stderr: error log, or only
        what the app prints with --error-logfile); parse the error log."""
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace")
            if log:
                self._on_log_line(line)
            if self.forward and (not log or self._should_forward(line)):
                self._write(sys.stderr if stderr else sys.stdout, line)
        stream.close()

    def _tail(self, path: str, offset: int) -> None:
        handle = None
        while True:
            if handle is None:
                try:
                    handle = open(path, "rb")  # noqa: SIM115
                    handle.seek(offset)
                except OSError:
                    handle = None
            if handle is not None:
                raw = handle.readline()
                if raw.endswith(b"\n"):
                    self._on_log_line(raw.decode("utf-8", "replace"))
                    continue
                handle.seek(-len(raw), os.SEEK_CUR)
            if self._proc is not None and self._proc.poll() is not None:
                if handle is not None:
                    for raw in handle:
                        self._on_log_line(raw.decode("utf-8", "replace"))
                    handle.close()
                return
            time.sleep(0.05)

    def _should_forward(self, line: str) -> bool:
        match = PREFIX.match(line)
        if match:
            self._forwarding = LEVELS.index(match.group(1).lower()) >= self.min_forward
        return self._forwarding

    @staticmethod
    def _write(stream, line: str) -> None:
        if stream is None:
            return
        try:
            stream.write(line)
            stream.flush()
        except (OSError, ValueError):
            pass  # closed by the time the server wrote (interpreter exit)

    def _on_log_line(self, line: str) -> None:
        with self._lock:
            self._log.append(line)
        text = line.rstrip("\n")
        running = RUNNING.search(text)
        if running:
            self.listeners.append(running.group(1))
            return
        ready = READY.search(text)
        if ready and not self.ready.is_set():
            self.worker_pids = [int(p) for p in ready.group(2).replace(",", " ").split()]
            self.ready.set()
            if self.on_ready is not None:
                self.on_ready()

    def _wait(self, pumps: list[threading.Thread]) -> None:
        assert self._proc is not None
        code = self._proc.wait()
        deadline = time.monotonic() + DRAIN_SECONDS
        for pump in pumps:
            pump.join(max(0.0, deadline - time.monotonic()))
        self.exit_code = code
        if self._parent_fd is not None:
            os.close(self._parent_fd)
            self._parent_fd = None
        self.exited.set()
        if self.on_exit is not None:
            self.on_exit()

    # ------------------------------------------------------------ what it says
    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def log_text(self) -> str:
        with self._lock:
            return "".join(self._log)

    def errors(self) -> str:
        """The ERROR and CRITICAL lines of the log, with their continuation lines."""
        out, keep = [], False
        for line in self.log_text().splitlines(keepends=True):
            match = PREFIX.match(line)
            if match:
                keep = match.group(1) in ("ERROR", "CRITICAL")
            if keep:
                out.append(line)
        return "".join(out)

    def failure(self) -> StartupFailed:
        reason = self.errors().strip() or self.log_text().strip()[-2000:]
        message = f"ferrocorn exited with code {self.exit_code} before it was ready"
        return StartupFailed(f"{message}:\n{reason}" if reason else message, self.exit_code, reason)

    def wait_ready(self, timeout: float | None = None) -> None:
        """Block until every worker is ready; StartupFailed if the server exits first,
        TimeoutError (after stopping it) if `timeout` passes."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.ready.is_set():
            if self.exited.is_set():
                raise self.failure()
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                self.stop(graceful=False)
                self.wait(10)
                raise TimeoutError(f"ferrocorn was not ready within {timeout} s:\n{self.errors()}")
            self.ready.wait(0.05 if remaining is None else min(0.05, remaining))
        if self.exited.is_set() and not self.ready.is_set():
            raise self.failure()

    # ------------------------------------------------------------------ stopping
    def signal(self, sig: int) -> None:
        if self._proc is not None and not self.exited.is_set():
            try:
                self._proc.send_signal(sig)
            except ProcessLookupError:
                pass

    def stop(self, graceful: bool = True) -> None:
        """Ask the master to stop: SIGTERM (graceful) or SIGINT (quick). Returns at once."""
        self.signal(signal.SIGTERM if graceful else signal.SIGINT)

    def wait(self, timeout: float | None = None) -> int | None:
        self.exited.wait(timeout)
        return self.exit_code

    def stop_and_wait(self, timeout: float | None = 30.0) -> int | None:
        """Graceful stop; after `timeout` a quick one, then SIGKILL (workers follow their
        master by their parent-death signal)."""
        self.stop(graceful=True)
        if self.exited.wait(timeout):
            return self.exit_code
        self.stop(graceful=False)
        if not self.exited.wait(10):
            self.signal(signal.SIGKILL)
            self.exited.wait(10)
        return self.exit_code
