"""An app for the drain and recycling tests: a slow lifespan startup (a real app that
opens pools or loads a model), a hello route, and a route that keeps memory, so RSS
recycling has something to catch."""

import asyncio
import os

STARTUP_SECONDS = float(os.environ.get("DRAIN_APP_STARTUP", "5"))
# Kept alive for the worker's life: what a leaking app does.
_hoard: list[bytearray] = []


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await asyncio.sleep(STARTUP_SECONDS)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["path"] == "/slow":
        await asyncio.sleep(1)
    if scope["path"] == "/hoard":
        # 8 MiB a request, touched so it is resident.
        _hoard.append(bytearray(b"x" * (8 * 1024 * 1024)))
        body = f"{len(_hoard) * 8} MiB held by {os.getpid()}".encode()
    else:
        body = str(os.getpid()).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"text/plain"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
