"""An sse-starlette event stream: three events, then a wait on a queue nothing feeds.

Each generator counts itself live until its `finally` runs; /live reports the counts.
"""

import asyncio

from sse_starlette.sse import EventSourceResponse
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

live = {"count": 0, "cleaned_up": 0}
queue: asyncio.Queue = asyncio.Queue()  # never fed


async def events():
    live["count"] += 1
    try:
        for i in range(3):
            yield {"event": "tick", "data": str(i)}
        while True:
            yield {"event": "update", "data": await queue.get()}
    finally:
        live["count"] -= 1
        live["cleaned_up"] += 1


async def sse(request):
    return EventSourceResponse(events())


async def counts(request):
    return JSONResponse(live)


app = Starlette(routes=[Route("/sse", sse), Route("/live", counts)])
