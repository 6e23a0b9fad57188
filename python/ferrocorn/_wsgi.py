"""A WSGI worker's life after boot (python/ferrocorn/worker.py loads the app).

The app runs on a pool of plain `threading.Thread`s, so it sees ordinary Python
threads: the signal mask, `threading.current_thread()`, thread-locals and the
hung-worker stack dump are what they are under any threaded server. Each one runs
`WsgiPool.run` (src/wsgi/pool.rs), which waits for requests with the GIL released and
calls the app with it held.

The main thread only heartbeats and takes the master's orders, blocked in poll() on the
core's event fd. There is no event loop: a WSGI worker doesn't import asyncio (nor
uvloop) unless the app does (a hello-world worker went from 24.4 to 17.4 MB RSS,
bench/RESULTS.md 2026-12-01).
"""

from __future__ import annotations

import os
import select
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

HEARTBEAT_SECONDS = 1.0
# On stop, how long to wait for the threads to return (they are daemons: a request
# still hung after the graceful timeout doesn't keep the process alive).
JOIN_SECONDS = 5.0


class Orders:
    """The master's orders, as the core hands them over in `drain()`."""

    def __init__(self) -> None:
        self.order: str | None = None  # "stop" (drain first) or "quit"
        self.drained = False

    def on_control(self, what: str) -> None:
        if what in ("stop", "quit"):
            if self.order is None:
                self.order = what
            elif what == "quit":
                self.drained = True  # a second, harder order while draining: stop waiting
        elif what == "drained":
            self.drained = True


class MainThread:
    """Waits on the core's fd, handing its events to the core, and heartbeats."""

    def __init__(self, core: Any, fd: int) -> None:
        self.core = core
        self.poll = select.poll()
        self.poll.register(fd, select.POLLIN)
        self.next_beat = 0.0

    def beat(self) -> None:
        self.core.heartbeat(HEARTBEAT_SECONDS if self.next_beat else None)
        self.next_beat = time.monotonic() + HEARTBEAT_SECONDS

    def wait_until(self, done: Callable[[], bool], timeout: float | None = None) -> bool:
        """Serve events until `done()`; False if `timeout` seconds passed first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not done():
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                return False
            wait = self.next_beat - now
            if deadline is not None:
                wait = min(wait, deadline - now)
            if self.poll.poll(max(wait, 0.0) * 1000):
                self.core.drain()
            if time.monotonic() >= self.next_beat:
                self.beat()
        return True


def serve(core: Any, config: dict, app: Any, log: Any, access_route: Callable[[], Any]) -> int:
    """Serve `app` until the master says stop; the exit status."""
    orders = Orders()
    # The app module attached its access filters or handlers on import, if any.
    fd, pool = core.serve_wsgi(app, orders.on_control, access_route())
    threads = start_threads(pool, config["threads"])
    main = MainThread(core, fd)
    pid = os.getpid()
    try:
        if config.get("check_report"):
            _run_check_probe(config["check_report"])
        core.ready()
        main.beat()
        main.wait_until(lambda: orders.order is not None)
        if orders.order == "stop":
            log("info", f"Shutting down worker [{pid}]")
        core.begin_shutdown()
        if orders.order == "stop":
            timeout = config.get("timeout_graceful_shutdown")
            if not main.wait_until(lambda: orders.drained, timeout):
                log("error", "Requests still running after the graceful shutdown timeout")
    except KeyboardInterrupt:
        return 0  # Ctrl-C reached the whole process group; the master stops us anyway.
    stop_threads(pool, threads)
    log("info", f"Finished worker process [{pid}]")
    if any(thread.is_alive() for thread in threads):
        # A request still runs (past the graceful timeout). Interpreter shutdown would
        # end its thread when it next takes the GIL, unwinding through the server's
        # native frames: leave now instead, as the master would kill us.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    return 0


def _run_check_probe(directory: str) -> None:
    """`ferrocorn check`: the contract probe, run where WSGI app code runs (a thread
    of the worker's), before the worker says it is ready."""
    from ferrocorn import _check

    probe = threading.Thread(target=_check.write_report, args=(directory,), name="ferrocorn-check")
    probe.start()
    probe.join()


def start_threads(pool: Any, count: int) -> list[threading.Thread]:
    threads = [
        threading.Thread(target=pool.run, args=(slot,), name=f"ferrocorn-wsgi-{slot}", daemon=True)
        for slot in range(count)
    ]
    for thread in threads:
        thread.start()
    return threads


def stop_threads(pool: Any, threads: list[threading.Thread]) -> None:
    pool.close()
    for thread in threads:
        thread.join(JOIN_SECONDS / max(len(threads), 1))
