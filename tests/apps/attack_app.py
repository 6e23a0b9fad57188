"""The app behind tests/test_attacks.py: small, predictable handlers, and a count of how
many times the app was called, so a test can tell how much work an attack caused.

HTTP: `/` says hello, `/calls` reports the call count, `/slow` sleeps 0.3 s (work an
attacker would like to start and abandon), `/big` sends 1 MiB, `/echo` echoes the body.
WebSocket: echoes every message.
"""

import asyncio
import json

HELLO = b"Hello, world!"
calls = {"http": 0, "ws_messages": 0}


async def respond(send, body: bytes, status: int = 200) -> None:
    headers = [(b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def http(scope, receive, send):
    path = scope["path"]
    if path == "/calls":
        await respond(send, json.dumps(calls).encode())
        return
    calls["http"] += 1
    if path == "/slow":
        await asyncio.sleep(0.3)
        await respond(send, b"slept")
    elif path == "/big":
        headers = [(b"content-length", str(16 * 65536).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for _ in range(16):
            await send({"type": "http.response.body", "body": b"b" * 65536, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    elif path == "/echo":
        body = b""
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return
            body += message["body"]
            if not message["more_body"]:
                break
        await respond(send, body)
    else:
        await respond(send, HELLO)


async def websocket(scope, receive, send):
    assert (await receive())["type"] == "websocket.connect"
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        calls["ws_messages"] += 1
        if message.get("text") is not None:
            await send({"type": "websocket.send", "text": message["text"]})
        else:
            await send({"type": "websocket.send", "bytes": message["bytes"]})


async def app(scope, receive, send):
    if scope["type"] == "http":
        await http(scope, receive, send)
    elif scope["type"] == "websocket":
        await websocket(scope, receive, send)
    elif scope["type"] == "lifespan":
        while True:
            message = await receive()
            kind = message["type"].rsplit(".", 1)[-1]
            await send({"type": f"lifespan.{kind}.complete"})
            if kind == "shutdown":
                return
