"""Apps whose lifespan shutdown needs the tasks they started to still be running.

uvicorn stops a server in this order: stop accepting, let requests finish, send
`lifespan.shutdown` and wait for the app's answer, and only then (asyncio.run leaving)
cancel whatever tasks are left. Each app here (and in compat_litestar.py,
compat_quart.py) writes what its shutdown did, one line at a time, to the file named by
COMPAT_RECORD.
"""

import asyncio
import contextlib
import os

import anyio
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route


def record(line: str) -> None:
    with open(os.environ["COMPAT_RECORD"], "a") as f:
        f.write(line + "\n")


# FastAPI: a lifespan that keeps an anyio task group open around `yield`, with a
# background task in it, and cleans up after `yield`.


async def heartbeat() -> None:
    while True:
        await anyio.sleep(0.05)


@contextlib.asynccontextmanager
async def fastapi_lifespan(app: FastAPI):
    async with anyio.create_task_group() as tg:
        tg.start_soon(heartbeat)
        yield
        await anyio.sleep(0.05)
        record("cleanup after yield ran")
        tg.cancel_scope.cancel()
    record("task group closed")


fastapi_taskgroup_app = FastAPI(lifespan=fastapi_lifespan)


@fastapi_taskgroup_app.get("/")
async def fastapi_index():
    return "fastapi"


# A flusher started at startup: requests buffer events, the flusher writes them out
# every 30 s and once more when shutdown asks it to stop.

buffer: list[str] = []


async def flusher(stop: asyncio.Event) -> None:
    while True:
        try:
            await asyncio.wait_for(stop.wait(), timeout=30)
        except asyncio.TimeoutError:  # TimeoutError from 3.11 on
            pass
        pending, buffer[:] = list(buffer), []
        with open(os.environ["COMPAT_RECORD"], "a") as f:
            f.writelines(f"{event}\n" for event in pending)
        if stop.is_set():
            return


@contextlib.asynccontextmanager
async def flusher_lifespan(app):
    stop = asyncio.Event()
    task = asyncio.create_task(flusher(stop))
    yield
    stop.set()
    await task
    record("flusher stopped")


async def buffer_event(request):
    buffer.append(request.query_params["event"])
    return PlainTextResponse("buffered")


flusher_app = Starlette(routes=[Route("/event", buffer_event)], lifespan=flusher_lifespan)
