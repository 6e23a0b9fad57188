"""The smallest ASGI app: `ferrocorn examples.hello:app` answers "Hello, world!" (13 bytes).

Plain ASGI 3, no framework. The lifespan scope is answered (startup and shutdown both
complete at once) so every server starts it the same way and logs nothing about it.
"""

BODY = b"Hello, world!"
HEADERS = [(b"content-type", b"text/plain"), (b"content-length", b"13")]


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
        return
    if scope["type"] != "http":
        return  # websocket or an unknown scope type: not served by this app
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})


async def lifespan(receive, send):
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
