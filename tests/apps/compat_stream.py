"""A Starlette StreamingResponse whose generator waits on a queue that nothing feeds.

Each generator counts itself live until its `finally` runs; /live reports the counts.
"""

import asyncio

from starlette.applications import Starlette
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

live = {"count": 0, "cleaned_up": 0}
queue: asyncio.Queue = asyncio.Queue()  # never fed


async def updates():
    live["count"] += 1
    try:
        yield "hello\n"
        while True:
            yield await queue.get()
    finally:
        live["count"] -= 1
        live["cleaned_up"] += 1


async def stream(request):
    return StreamingResponse(updates(), media_type="text/plain")


async def counts(request):
    return JSONResponse(live)


app = Starlette(routes=[Route("/stream", stream), Route("/live", counts)])
