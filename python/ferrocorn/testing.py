"""Serve an app in the background for the length of a test.

    from ferrocorn.testing import serve

    def test_home():
        with serve("main:app", workers=2) as url:
            assert httpx.get(url + "/").status_code == 200

`serve()` starts a real ferrocorn server (master and workers, lifespan startup) on a
free port of 127.0.0.1 unless `port`, `uds`, `fd` or `bind` is given, waits until every worker
is ready and yields the base URL ("http://127.0.0.1:PORT", or the socket path with
`uds=`). On exit it stops the server gracefully (requests drain, lifespan shutdown
runs) and waits for it. `aserve()` is the same as an async context manager.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

from ferrocorn._process import StartupFailed
from ferrocorn._server import Config, Server

__all__ = ["StartupFailed", "aserve", "serve"]

STARTUP_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0


def _config(app: Any, options: dict[str, Any]) -> Config:
    given = {k for k, v in options.items() if v is not None}
    if not {"port", "uds", "fd", "bind"} & given:
        options = {**options, "port": 0}
    if "bind" not in given:  # --bind names its hosts itself
        options.setdefault("host", "127.0.0.1")
    return Config(app, **options)


def _where(server: Server) -> str:
    where = server.uds if server.uds is not None else server.url
    assert where is not None
    return where


@contextlib.contextmanager
def serve(
    app: Any,
    *,
    startup_timeout: float = STARTUP_TIMEOUT,
    stop_timeout: float = STOP_TIMEOUT,
    **options: Any,
) -> Iterator[str]:
    """Serve `app` (an import string, or a module-level app object) with `options`
    (as `ferrocorn.run()` takes them) until the block ends; yields the base URL.
    Raises StartupFailed (with the server's error lines) if the server doesn't start."""
    server = Server(_config(app, options))
    master = server._start()
    try:
        master.wait_ready(startup_timeout)
        yield _where(server)
    finally:
        master.stop_and_wait(stop_timeout)


@contextlib.asynccontextmanager
async def aserve(
    app: Any,
    *,
    startup_timeout: float = STARTUP_TIMEOUT,
    **options: Any,
) -> AsyncIterator[str]:
    """`serve()` for async tests: `async with aserve("main:app") as url: ...`."""
    import asyncio

    server = Server(_config(app, options))
    task = asyncio.ensure_future(server.serve())
    try:
        await server.wait_started(startup_timeout)
        yield _where(server)
    finally:
        await server.shutdown()
        await task
