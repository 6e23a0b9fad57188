"""A plain ASGI app for the WebSocket, HTTP/2 and TLS tests.

WebSocket paths do one thing each; http paths serve the core checks (scope, echo,
streaming) and `/record`, which returns what the WebSocket handlers recorded (the tests
run this app with one worker when they read it).
"""

import asyncio
import json
import os

import send_app

RECORD: dict = {}


def _scope_json(scope: dict) -> bytes:
    def plain(value):
        if isinstance(value, bytes):
            return value.decode("latin-1")
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    keep = {k: v for k, v in scope.items() if k != "state"}
    return json.dumps(plain(keep)).encode()


async def _http(scope, receive, send):
    path = scope["path"]
    status, body, headers = 200, b"", [(b"content-type", b"text/plain")]
    if path.startswith("/send/"):
        await send_app.app(scope, receive, send, RECORD)
        return
    if path == "/scope":
        body = _scope_json(scope)
    elif path == "/record":
        body = json.dumps(RECORD).encode()
    elif path == "/echo":
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
    elif path == "/stream":
        # 5 MiB in 64 KiB pieces, each piece filled with its index.
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for i in range(80):
            piece = bytes([i]) * 65536
            await send({"type": "http.response.body", "body": piece, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return
    elif path == "/flood":
        # Up to 1 GiB in 64 KiB pieces, counted, for slow-reader tests.
        RECORD["http_flood_sent"] = 0
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for _ in range(16384):
            await send({"type": "http.response.body", "body": b"x" * 65536, "more_body": True})
            RECORD["http_flood_sent"] += 1
        await send({"type": "http.response.body", "body": b""})
        return
    elif path == "/wait-disconnect":
        # Record that this request saw http.disconnect (a reset HTTP/2 stream).
        RECORD["wait_disconnect"] = "waiting"
        message = await receive()
        while message["type"] != "http.disconnect":
            message = await receive()
        RECORD["wait_disconnect"] = "disconnected"
        return
    elif path == "/":
        body = b"Hello, world!"
    else:
        status, body = 404, b"not found"
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _websocket(scope, receive, send):
    path = scope["path"]
    assert (await receive())["type"] == "websocket.connect"
    if path == "/deny":
        await send({"type": "websocket.close"})
        return
    if path == "/deny-response":
        await send(
            {
                "type": "websocket.http.response.start",
                "status": 418,
                "headers": [(b"x-deny", b"1"), (b"content-type", b"text/plain")],
            }
        )
        await send({"type": "websocket.http.response.body", "body": b"no ", "more_body": True})
        await send({"type": "websocket.http.response.body", "body": b"teapot"})
        return
    if path == "/subprotocol":
        chosen = scope["subprotocols"][-1] if scope["subprotocols"] else None
        await send(
            {"type": "websocket.accept", "subprotocol": chosen, "headers": [(b"x-extra", b"yes")]}
        )
    else:
        await send({"type": "websocket.accept"})

    if path == "/scope":
        await send({"type": "websocket.send", "text": _scope_json(scope).decode()})
        await receive()
    elif path == "/close-with":
        query = dict(p.split("=") for p in scope["query_string"].decode().split("&"))
        await send(
            {"type": "websocket.close", "code": int(query["code"]), "reason": query["reason"]}
        )
    elif path == "/record-disconnect":
        message = await receive()
        RECORD["disconnect"] = {"code": message.get("code"), "reason": message.get("reason")}
    elif path == "/close-then-receive":
        # After its own close the app still awaits receive(): the client's close answer
        # must arrive as websocket.disconnect (granian issue 798 left such apps hanging).
        await send({"type": "websocket.close", "code": 4003, "reason": "done"})
        message = await receive()
        RECORD["after_own_close"] = {"type": message["type"], "code": message.get("code")}
    elif path == "/send-after-close":
        await send({"type": "websocket.close", "code": 1000})
        try:
            await send({"type": "websocket.send", "text": "late"})
        except Exception as exc:
            RECORD["after_close"] = {
                "type": type(exc).__name__,
                "runtime_error": isinstance(exc, RuntimeError),
            }
    elif path == "/send-after-disconnect":
        message = await receive()
        assert message["type"] == "websocket.disconnect"
        try:
            await send({"type": "websocket.send", "text": "late"})
        except Exception as exc:
            RECORD["after_disconnect"] = {
                "type": type(exc).__name__,
                "os_error": isinstance(exc, OSError),
            }
    elif path == "/flood":
        RECORD["flood_sent"] = 0
        try:
            for _ in range(2000):
                await send({"type": "websocket.send", "bytes": b"x" * (1 << 20)})
                RECORD["flood_sent"] += 1
        except OSError:
            pass
    elif path == "/slow-consumer":
        # Read nothing for a while, then everything: the client must have been held back.
        await asyncio.sleep(1.5)
        count = 0
        while count < 100:
            message = await receive()
            count += message["type"] == "websocket.receive"
        await send({"type": "websocket.send", "text": f"got {count}"})
        await receive()
    elif path == "/finally":
        try:
            message = await receive()
            RECORD["finally_code"] = message.get("code")
            await asyncio.sleep(3600)
        finally:
            marker = os.environ.get("FERROCORN_TEST_MARKER")
            if marker:
                with open(marker, "w") as f:
                    f.write(f"finally ran, disconnect code {RECORD.get('finally_code')}")
    else:  # /echo and /subprotocol
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("text") is not None:
                await send({"type": "websocket.send", "text": message["text"]})
            else:
                await send({"type": "websocket.send", "bytes": message["bytes"]})


async def app(scope, receive, send):
    if scope["type"] == "http":
        await _http(scope, receive, send)
    elif scope["type"] == "websocket":
        await _websocket(scope, receive, send)
