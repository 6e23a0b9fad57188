"""The ASGI lifespan protocol: startup before serving, shutdown after draining."""

from __future__ import annotations

import asyncio
from typing import Any

# The spec versions uvicorn gives each scope type.
ASGI = {"version": "3.0", "spec_version": "2.0"}


class LifespanFailed(Exception):
    """Startup or shutdown failed; the message says why in one line, and `traceback`
    is the app's exception when it raised one."""

    def __init__(self, message: str, traceback: str | None = None) -> None:
        super().__init__(message)
        self.traceback = traceback


class Lifespan:
    def __init__(self, app: Any, mode: str, log: Any) -> None:
        self.app = app
        self.mode = mode  # "auto", "on" or "off"
        self.log = log
        self.state: dict[str, Any] = {}
        self.supported = mode != "off"
        self._events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._startup: asyncio.Future[None] | None = None
        self._shutdown: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def task(self) -> asyncio.Task[None] | None:
        return self._task

    async def startup(self) -> None:
        if not self.supported:
            return
        loop = asyncio.get_running_loop()
        self._startup = loop.create_future()
        self._shutdown = loop.create_future()
        self.log("info", "Waiting for application startup.")
        self._task = loop.create_task(self._run())
        await self._events.put({"type": "lifespan.startup"})
        await asyncio.wait([self._startup, self._task], return_when=asyncio.FIRST_COMPLETED)
        if self._startup.done():
            self._startup.result()  # raises LifespanFailed
            if self.supported:
                self.log("info", "Application startup complete.")
            return
        # The app returned or raised before answering startup.
        self._task.result()

    async def shutdown(self) -> None:
        if not self.supported or self._task is None or self._shutdown is None:
            return
        self.log("info", "Waiting for application shutdown.")
        await self._events.put({"type": "lifespan.shutdown"})
        await asyncio.wait([self._shutdown, self._task], return_when=asyncio.FIRST_COMPLETED)
        if self._shutdown.done():
            try:
                self._shutdown.result()
            except LifespanFailed as exc:
                self.log("error", str(exc))
                return
            self.log("info", "Application shutdown complete.")

    async def _run(self) -> None:
        scope = {"type": "lifespan", "asgi": ASGI, "state": self.state}
        try:
            await self.app(scope, self._receive, self._send)
        except BaseException as exc:
            failed = self._startup is not None and self._startup.done()
            if failed and self._startup.exception() is not None:
                return  # The app reported startup.failed itself; its message says it all.
            if self._startup is not None and not self._startup.done():
                if self.mode == "auto":
                    # Apps that don't speak lifespan raise on the unknown scope type.
                    self.supported = False
                    self.log("info", "ASGI 'lifespan' protocol appears unsupported.")
                    self._startup.set_result(None)
                    return
                import traceback

                # Reported by the master with the boot failure: once for all workers.
                self._startup.set_exception(
                    LifespanFailed(
                        f"Application startup failed: {exc!r}",
                        "".join(traceback.format_exception(exc)).rstrip(),
                    )
                )
                return
            if isinstance(exc, asyncio.CancelledError):
                return
            import traceback

            self.log("error", "".join(traceback.format_exception(exc)).rstrip())
            if self._shutdown is not None and not self._shutdown.done():
                self._shutdown.set_exception(LifespanFailed("Application shutdown failed."))
        else:
            if self._startup is not None and not self._startup.done():
                if self.mode == "auto":
                    self.supported = False
                    self.log("info", "ASGI 'lifespan' protocol appears unsupported.")
                    self._startup.set_result(None)
                else:
                    self._startup.set_exception(
                        LifespanFailed("Application returned without completing startup.")
                    )
            elif self._shutdown is not None and not self._shutdown.done():
                self._shutdown.set_result(None)

    async def _receive(self) -> dict[str, Any]:
        return await self._events.get()

    async def _send(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        assert self._startup is not None and self._shutdown is not None
        if kind == "lifespan.startup.complete":
            self._startup.set_result(None)
        elif kind == "lifespan.startup.failed":
            detail = message.get("message") or ""
            self._startup.set_exception(
                LifespanFailed(f"Application startup failed. {detail}".rstrip())
            )
        elif kind == "lifespan.shutdown.complete":
            self._shutdown.set_result(None)
        elif kind == "lifespan.shutdown.failed":
            detail = message.get("message") or ""
            self._shutdown.set_exception(
                LifespanFailed(f"Application shutdown failed. {detail}".rstrip())
            )
        else:
            raise RuntimeError(f"Unexpected ASGI message '{kind}' sent for the lifespan scope.")
