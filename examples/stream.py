"""A 1 MiB response streamed in 64 KiB chunks (plain ASGI 3), for bench/'s `stream`
workload: throughput of big responses and the memory they take."""

CHUNK = b"x" * 65536
CHUNKS = 16


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/octet-stream")],
        }
    )
    for _ in range(CHUNKS - 1):
        await send({"type": "http.response.body", "body": CHUNK, "more_body": True})
    await send({"type": "http.response.body", "body": CHUNK})
