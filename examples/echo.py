"""Reads the whole request body and sends it back: `ferrocorn examples.echo:app`.

Plain ASGI 3, no framework; the bench POSTs 10 KB to it. The lifespan scope is answered
like in examples/hello.py.
"""


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
        return
    if scope["type"] != "http":
        return  # websocket or an unknown scope type: not served by this app
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return  # the client went away before the body was complete
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    body = b"".join(chunks)
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"application/octet-stream"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def lifespan(receive, send):
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
