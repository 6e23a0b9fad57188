"""A WebSocket echo app: the Autobahn fuzzingclient's peer, and the bytes-like send tests.

Every path echoes text as text. Binary messages go back as `bytes`, except on
`/bytearray` and `/memoryview` (sent back as that type) and `/memoryview-strided`
(every other byte, as a non-contiguous memoryview). `/bad-bytes` answers each message
with the error that sending a list as `bytes` raised.
"""

import app_parts


def _as_sent(path: str, data: bytes):
    if path == "/bytearray":
        return bytearray(data)
    if path == "/memoryview":
        return memoryview(data)
    if path == "/memoryview-strided":
        return memoryview(data)[::2]
    return data


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        await app_parts.complete_lifespan(receive, send)
        return
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b"websocket only"})
        return
    path = scope["path"]
    assert (await receive())["type"] == "websocket.connect"
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        if path == "/bad-bytes":
            try:
                await send({"type": "websocket.send", "bytes": [1, 2, 3]})
                answer = "accepted"
            except Exception as exc:
                answer = f"{type(exc).__name__}: {exc}"
            await send({"type": "websocket.send", "text": answer})
        elif message.get("text") is not None:
            await send({"type": "websocket.send", "text": message["text"]})
        else:
            await send({"type": "websocket.send", "bytes": _as_sent(path, message["bytes"])})
