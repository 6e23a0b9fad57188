"""A Litestar app with startup and shutdown hooks (see compat_lifespan.py)."""

import asyncio

from compat_lifespan import record
from litestar import Litestar
from litestar import get as litestar_get

# Litestar: its lifespan always enters an event emitter, an anyio task group with a
# worker task; on_shutdown hooks run when that context exits.


async def litestar_startup(app: Litestar) -> None:
    record("litestar on_startup ran")


async def litestar_shutdown(app: Litestar) -> None:
    await asyncio.sleep(0.05)  # a hook that awaits something (closing a pool, say)
    record("litestar on_shutdown ran")


@litestar_get("/")
async def litestar_index() -> str:
    return "litestar"


litestar_app = Litestar(
    route_handlers=[litestar_index],
    on_startup=[litestar_startup],
    on_shutdown=[litestar_shutdown],
)
