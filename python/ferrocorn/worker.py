"""A worker process: `python -m ferrocorn.worker --control-fd N`, started by the master.

The interpreter starts exactly as plain `python` does; this module adds no signal
handler of its own (the Rust core handles a direct SIGTERM at the C level and undoes it
in forked children). The master sends the configuration over the control channel.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import signal
import sys
from typing import Any

from ferrocorn import _ferrocorn, _logging, _requests, _wsgi
from ferrocorn.__main__ import set_title
from ferrocorn._app import AppLoadError, load_app
from ferrocorn._interface import resolve as resolve_interface
from ferrocorn._lifespan import Lifespan, LifespanFailed

HEARTBEAT_SECONDS = 1.0
WEBSOCKET_CLOSE_GRACE = 0.1


def _new_loop(kind: str) -> asyncio.AbstractEventLoop:
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


def _forget_wakeup_fd_in_child() -> None:
    # asyncio/uvloop route signals through a wakeup fd; a child the app forks must not
    # write its own signals into this worker's loop (DEVELOPERS.md, contract point 4).
    try:
        signal.set_wakeup_fd(-1)
    except ValueError:
        pass  # Not the main thread of the child.


def _one_line(exc: BaseException) -> str:
    """`NameError: name 'x' is not defined (main.py, line 3)`: the error and where, in
    the innermost frame that is real code (not `<frozen os>`)."""
    import traceback

    where = ""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if not f.filename.startswith("<")]
    if isinstance(exc, SyntaxError) and exc.filename:
        where = f" ({exc.filename}, line {exc.lineno})"
    elif frames:
        where = f" ({frames[-1].filename}, line {frames[-1].lineno})"
    # A SyntaxError's str() already ends with "(file, line N)"; its msg is the message.
    text = exc.msg if isinstance(exc, SyntaxError) and exc.msg else str(exc)
    message = text.splitlines()[0] if text else ""
    return f"{type(exc).__name__}: {message}{where}"


class Worker:
    def __init__(self, core: Any, config: dict) -> None:
        self.core = core
        self.config = config
        # With --log-config, the worker's own messages go through Python logging.
        self.log = _logging.server_logger(config) or core.log
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

    def access_route(self) -> tuple[str, Any]:
        """Where access records go (see _logging.access_route), decided once the app
        has had its chance to attach access filters or handlers."""
        route, access = _logging.access_route(self.config)
        if route != "rust" and (
            self.config.get("access_log_json") or self.config.get("access_log_format")
        ):
            self.log(
                "warning",
                f"The access logger was changed by the app or --log-config (access log:"
                f" {route}): --access-log-json / --access-log-format do not apply.",
            )
        return route, access

    async def serve_until_stopped(self) -> str:
        """Serving has started: tell the master we're ready, heartbeat, and wait for its
        order ("stop" or "quit"); then stop accepting. The same for ASGI and WSGI."""
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

    async def main_wsgi(self, app: Any) -> int:
        """A WSGI app: the requests run on the pool's threads; this loop (the main
        thread) only heartbeats and takes the master's orders."""
        loop = asyncio.get_running_loop()
        self.stop_order = loop.create_future()
        self.drained = loop.create_future()
        # The app module attached its access filters or handlers on import, if any.
        fd, pool = self.core.serve_wsgi(app, self.on_control, self.access_route())
        loop.add_reader(fd, self.core.drain)
        threads = _wsgi.start_threads(pool, self.config["threads"])
        order = await self.serve_until_stopped()
        pid = os.getpid()
        if order == "stop":
            try:
                await asyncio.wait_for(
                    asyncio.shield(self.drained), self.config.get("timeout_graceful_shutdown")
                )
            except asyncio.TimeoutError:
                self.log("error", "Requests still running after the graceful shutdown timeout")
        _wsgi.stop_threads(pool, threads)
        loop.remove_reader(fd)
        self.log("info", f"Finished worker process [{pid}]")
        if any(thread.is_alive() for thread in threads):
            # A request still runs (past the graceful timeout). Interpreter shutdown
            # would end its thread when it next takes the GIL, unwinding through the
            # server's native frames: leave now instead, as the master would kill us.
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)
        return 0

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


def main() -> int:
    if len(sys.argv) != 3 or sys.argv[1] != "--control-fd":
        print("ferrocorn.worker is started by the ferrocorn master", file=sys.stderr)
        return 2
    core = _ferrocorn.WorkerCore(int(sys.argv[2]))
    config = json.loads(core.config_json)
    set_title(f"ferrocorn: worker [{config['app']}]")
    os.register_at_fork(after_in_child=_forget_wakeup_fd_in_child)
    try:
        # Before the app is imported, as uvicorn: module-level loggers and handlers the
        # app makes see the configured logging.
        _logging.configure(core, config)
    except _logging.LogConfigError as exc:
        core.boot_failed(f"--log-config {config.get('log_config')}: {exc}", 2)
        return 2
    try:
        app = load_app(config["app"], config["app_dir"], config["factory"])
        app, interface = resolve_interface(app, config["interface"], config["app"])
        loop_kind = config["loop_kind"]
        if interface == "wsgi" and loop_kind == "auto":
            # The loop of a WSGI worker only heartbeats and takes orders: plain asyncio
            # does that, and not importing uvloop keeps the worker 2 MB smaller.
            loop_kind = "asyncio"
        loop = _new_loop(loop_kind)
    except AppLoadError as exc:
        core.boot_failed(str(exc))
        return 3
    except BaseException as exc:
        # The whole traceback, as under uvicorn (a settings error names its fields only
        # there), and one line the master repeats as the reason it stops. The master
        # logs the traceback, so N workers failing alike show it once, not N times.
        import traceback

        # Exit 1, as Python (and so uvicorn) ends on an uncaught exception.
        core.boot_failed(
            f"Error loading ASGI app. {_one_line(exc)}",
            1,
            "".join(traceback.format_exception(exc)).rstrip(),
        )
        return 1
    asyncio.set_event_loop(loop)
    worker = Worker(core, config)
    try:
        main = worker.main_wsgi if interface == "wsgi" else worker.main
        return loop.run_until_complete(main(app))
    except KeyboardInterrupt:
        return 0  # Ctrl-C reached the whole process group; the master stops us anyway.
    finally:
        loop.close()


if __name__ == "__main__":
    sys.exit(main())
