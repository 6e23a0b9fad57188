"""An ASGI worker's life after boot (python/ferrocorn/worker.py loads the app): the
event loop in the main thread, lifespan, serving, and the stop in uvicorn's order.
"""

from __future__ import annotations

import asyncio
import importlib
import os
from typing import Any

from ferrocorn import _requests
from ferrocorn._app import AppLoadError
from ferrocorn._lifespan import Lifespan, LifespanFailed

HEARTBEAT_SECONDS = 1.0
WEBSOCKET_CLOSE_GRACE = 0.1


def new_loop(kind: str) -> asyncio.AbstractEventLoop:
    if kind in ("auto", "uvloop", "zuvloop"):
        module = "uvloop" if kind == "auto" else kind
        try:
            new_event_loop = importlib.import_module(module).new_event_loop
        except ImportError:
            if kind != "auto":
                message = f"--loop {kind} was given but {kind} is not installed."
                raise AppLoadError(message) from None
        else:
            return new_event_loop()
    if kind in ("auto", "asyncio", "none"):
        # "none" is uvicorn's "asyncio's own choice": the event loop policy's loop, so
        # an app that installed a policy gets its loop.
        return asyncio.new_event_loop()
    # uvicorn's custom loop factory: "module:function", called to make the loop.
    module_name, _, attr = kind.partition(":")
    try:
        factory: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            factory = getattr(factory, part)
    except (ImportError, AttributeError) as exc:
        raise AppLoadError(f"Error loading custom loop setup function. {exc}") from None
    loop = factory()
    if not isinstance(loop, asyncio.AbstractEventLoop):
        raise AppLoadError(f"--loop {kind} returned {loop!r}, not an event loop.")
    return loop


def serve(
    core: Any, config: dict, app: Any, loop: asyncio.AbstractEventLoop, log: Any, access_route: Any
) -> int:
    """Run the app on `loop` until the master says stop; the exit status."""
    asyncio.set_event_loop(loop)
    worker = Worker(core, config, log, access_route)
    try:
        return loop.run_until_complete(worker.main(app))
    except KeyboardInterrupt:
        return 0  # Ctrl-C reached the whole process group; the master stops us anyway.
    finally:
        loop.close()


class Worker:
    def __init__(self, core: Any, config: dict, log: Any, access_route: Any) -> None:
        self.core = core
        self.config = config
        self.log = log
        # Called once serving starts: where access records go (worker.access_route).
        self.access_route = access_route
        self.stop_order: asyncio.Future[str] | None = None
        self.drained: asyncio.Future[None] | None = None

    def on_control(self, what: str) -> None:
        if what in ("stop", "quit"):
            if self.stop_order is not None and not self.stop_order.done():
                self.stop_order.set_result(what)
            elif what == "quit" and self.drained is not None and not self.drained.done():
                # A second, harder order while draining: stop waiting.
                self.drained.set_result(None)
        elif what == "drained" and self.drained is not None and not self.drained.done():
            self.drained.set_result(None)

    def heartbeat(self) -> None:
        self.core.heartbeat(HEARTBEAT_SECONDS)
        asyncio.get_running_loop().call_later(HEARTBEAT_SECONDS, self.heartbeat)

    async def serve_until_stopped(self) -> str:
        """Serving has started: tell the master we're ready, heartbeat, and wait for its
        order ("stop" or "quit"); then stop accepting."""
        if self.config.get("check_report"):
            # `ferrocorn check`: the contract probe, as app code would run, before ready.
            from ferrocorn import _check

            await _check.run_in_worker(self.config["check_report"])
        self.core.ready()
        self.heartbeat()
        order = await self.stop_order
        if order == "stop":
            self.log("info", f"Shutting down worker [{os.getpid()}]")
        self.core.begin_shutdown()
        return order

    async def main(self, app: Any) -> int:
        loop = asyncio.get_running_loop()
        self.stop_order = loop.create_future()
        self.drained = loop.create_future()
        lifespan = Lifespan(app, self.config["lifespan"], self.log)
        try:
            await lifespan.startup()
        except LifespanFailed as exc:
            self.core.boot_failed(str(exc), 3, exc.traceback)
            return 3
        except BaseException as exc:
            self.core.boot_failed(f"Application startup failed: {exc!r}")
            return 3

        requests = _requests.make(
            loop, app, self.config["task_impl"], self.config.get("reset_contextvars", False)
        )
        # After startup: the app module and its lifespan have attached their access
        # filters or handlers by now (see _logging.access_route).
        fd = self.core.serve(loop, requests, lifespan.state, self.on_control, self.access_route())
        loop.add_reader(fd, self.core.drain)
        order = await self.serve_until_stopped()
        pid = os.getpid()
        timeout = self.config.get("timeout_graceful_shutdown")
        if order == "stop":
            try:
                await asyncio.wait_for(asyncio.shield(self.drained), timeout)
            except asyncio.TimeoutError:
                self.log("error", "Cancel running requests: graceful shutdown timeout exceeded")
        if not self.drained.done():
            # WebSockets still open get close 1012 now; a moment lets their handlers see
            # websocket.disconnect before the remaining tasks are cancelled.
            self.core.close_websockets()
            await asyncio.sleep(WEBSOCKET_CLOSE_GRACE)
        # As uvicorn: requests still running after the drain (or on a quick stop) are
        # cancelled, so their `finally` blocks run; then the app's lifespan shutdown,
        # while the tasks the app started itself (flushers, task groups, background
        # jobs) still run; then whatever is left is cancelled, as asyncio.run() does.
        await _cancel_and_wait([t for t in asyncio.all_tasks() if _requests.is_request_task(t)])
        await lifespan.shutdown()
        spared = {asyncio.current_task(), lifespan.task}
        await _cancel_and_wait([t for t in asyncio.all_tasks() if t not in spared])
        loop.remove_reader(fd)
        self.log("info", f"Finished worker process [{pid}]")
        return 0


async def _cancel_and_wait(tasks: list[asyncio.Task]) -> None:
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(tasks, timeout=5)
