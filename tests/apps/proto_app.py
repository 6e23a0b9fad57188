"""The protocols app, plus http paths for HTTP/2 flow-control checks (test_http2.py).

- `/gated-echo` waits until `/open-gate` has been requested, then reads its body and echoes
  it with `x-pieces` (how many `http.request` messages it took): while the gate is shut the
  app reads nothing, so a server that follows the app only lets a window's worth in.
- `/progress?N` streams N pieces of 64 KiB, each filled with its index, and records in
  `/record` how many `send()` calls have returned: a client that grants no window should
  hold the app back.

Everything else is `protocols.app`, whose `/record` shows the same dict. Run with one
worker when reading `/record`.
"""

import asyncio

import protocols

RECORD = protocols.RECORD
_gate: asyncio.Event | None = None


def _get_gate() -> asyncio.Event:
    global _gate
    if _gate is None:
        _gate = asyncio.Event()
    return _gate


async def _respond(send, body: bytes, headers=()) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": list(headers)})
    await send({"type": "http.response.body", "body": body})


async def gated_echo(scope, receive, send):
    gate = _get_gate()
    RECORD["gated"] = "waiting"
    await gate.wait()
    gate.clear()
    chunks = []
    while True:
        message = await receive()
        assert message["type"] == "http.request", message
        chunks.append(message["body"])
        if not message["more_body"]:
            break
    RECORD["gated"] = "read"
    await _respond(send, b"".join(chunks), [(b"x-pieces", str(len(chunks)).encode())])


async def open_gate(scope, receive, send):
    _get_gate().set()
    await _respond(send, b"opened")


async def progress(scope, receive, send):
    count = int(scope["query_string"].decode() or "80")
    RECORD["progress"] = 0
    await send({"type": "http.response.start", "status": 200, "headers": []})
    for i in range(count):
        await send({"type": "http.response.body", "body": bytes([i]) * 65536, "more_body": True})
        RECORD["progress"] = i + 1
    await send({"type": "http.response.body", "body": b""})


ROUTES = {"/gated-echo": gated_echo, "/open-gate": open_gate, "/progress": progress}


async def app(scope, receive, send):
    handler = ROUTES.get(scope["path"]) if scope["type"] == "http" else None
    if handler is None:
        await protocols.app(scope, receive, send)
    else:
        await handler(scope, receive, send)
