"""Streaming responses whose generators wait on a queue that nothing feeds.

Each generator counts itself live until its `finally` runs; /live reports the count.
"""

import asyncio

from sse_starlette.sse import EventSourceResponse
from starlette.applications import Starlette
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

live = {"stream": 0, "sse": 0}
cleaned_up = {"stream": 0, "sse": 0}
queue: asyncio.Queue = asyncio.Queue()  # never fed


async def updates(kind: str):
    live[kind] += 1
    try:
        yield "hello\n"
        while True:
            yield await queue.get()
    finally:
        live[kind] -= 1
        cleaned_up[kind] += 1


async def stream(request):
    return StreamingResponse(updates("stream"), media_type="text/plain")


async def sse_events():
    live["sse"] += 1
    try:
        for i in range(3):
            yield {"event": "tick", "data": str(i)}
        while True:
            yield {"event": "update", "data": await queue.get()}
    finally:
        live["sse"] -= 1
        cleaned_up["sse"] += 1


async def sse(request):
    return EventSourceResponse(sse_events())


async def counts(request):
    return JSONResponse({"live": live, "cleaned_up": cleaned_up})


app = Starlette(routes=[Route("/stream", stream), Route("/sse", sse), Route("/live", counts)])
