"""Raw ASGI apps for the core tests; the path picks the behaviour."""

import asyncio
import json
import os
import time

served = {"count": 0}


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    served["count"] += 1
    path = scope["path"]
    handler = ROUTES.get(path.rstrip("/").split("/")[-1], scope_echo)
    await handler(scope, receive, send)


async def respond(send, status=200, body=b"", headers=()):
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-length", str(len(body)).encode()), *headers],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def scope_echo(scope, receive, send):
    def plain(value):
        if isinstance(value, bytes):
            return value.decode("latin-1")
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    data = {k: plain(v) for k, v in scope.items() if k != "state"}
    data["state_keys"] = sorted(scope.get("state", {}))
    await respond(
        send, body=json.dumps(data).encode(), headers=[(b"content-type", b"application/json")]
    )


async def echo(scope, receive, send):
    body, pieces = b"", 0
    while True:
        message = await receive()
        assert message["type"] == "http.request", message
        body += message["body"]
        pieces += 1
        if not message["more_body"]:
            break
    await respond(send, body=body, headers=[(b"x-pieces", str(pieces).encode())])


async def stream(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    for i in range(5):
        await send({"type": "http.response.body", "body": b"part%d;" % i, "more_body": True})
        await asyncio.sleep(0.05)
    await send({"type": "http.response.body", "body": b""})


async def stream_chunks(send, count, chunk=b"x" * 65536):
    """A streamed response of `count` chunks (no content-length: chunked on the wire)."""
    await send({"type": "http.response.start", "status": 200, "headers": []})
    for _ in range(count):
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


async def big(scope, receive, send):
    await stream_chunks(send, 16)


async def huge(scope, receive, send):
    """100 MB in 64 KB chunks; send() must wait for a slow reader, not buffer."""
    await stream_chunks(send, 1600)


async def short_body(scope, receive, send):
    """Declares 10 bytes, sends 5."""
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"10")]}
    )
    await send({"type": "http.response.body", "body": b"12345"})


async def long_body(scope, receive, send):
    """Declares 2 bytes, sends 5: the rest would be read as the next response."""
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]}
    )
    await send({"type": "http.response.body", "body": b"12345"})


async def noread(scope, receive, send):
    await respond(send, body=b"ignored the body")


async def slow(scope, receive, send):
    seconds = float(scope["query_string"].decode() or "1")
    await asyncio.sleep(seconds)
    await respond(send, body=b"slept")


async def hang(scope, receive, send):
    """Blocks the event loop itself, as a CPU-bound or sync-I/O handler would."""
    time.sleep(float(scope["query_string"].decode() or "60"))
    await respond(send, body=b"woke up")


async def spin(scope, receive, send):
    """A busy loop in pure Python: the loop never yields and the thread wants the GIL."""
    end = time.monotonic() + float(scope["query_string"].decode() or "60")
    while time.monotonic() < end:
        pass
    await respond(send, body=b"done spinning")


async def pid(scope, receive, send):
    await respond(send, body=str(os.getpid()).encode())


async def raise_before(scope, receive, send):
    raise ValueError("boom before start")


async def raise_after(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"partial", "more_body": True})
    raise ValueError("boom after start")


async def no_response(scope, receive, send):
    return


async def bad_message(scope, receive, send):
    await send({"type": "http.response.bogus"})


async def bad_status(scope, receive, send):
    await send({"type": "http.response.start", "status": "two hundred", "headers": []})


async def bad_header(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": [(b"x", b"a\r\nb")]})


async def count(scope, receive, send):
    await respond(send, body=str(served["count"]).encode())


async def disconnect(scope, receive, send):
    """Wait for the client to leave, then record what receive() and send() did."""
    first = await receive()
    second = await asyncio.wait_for(receive(), 10)
    try:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"too late"})
        outcome = "send returned"
    except OSError as exc:
        outcome = f"OSError:{type(exc).__name__}"
    with open(os.environ["FERROCORN_TEST_RECORD"], "w") as f:
        f.write(f"{first['type']} {second['type']} {outcome}")


ROUTES = {
    "echo": echo,
    "stream": stream,
    "big": big,
    "huge": huge,
    "short_body": short_body,
    "long_body": long_body,
    "noread": noread,
    "slow": slow,
    "hang": hang,
    "pid": pid,
    "spin": spin,
    "raise_before": raise_before,
    "raise_after": raise_after,
    "no_response": no_response,
    "bad_message": bad_message,
    "bad_status": bad_status,
    "bad_header": bad_header,
    "count": count,
    "disconnect": disconnect,
}


def factory():
    return app
