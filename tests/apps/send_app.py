"""Response shapes and ASGI response extensions, served under `/send/...` by the
protocols app (so HTTP/1.1, TLS and HTTP/2 tests all reach them).

Raw ASGI paths send exactly the messages a test needs; `/send/starlette/...` are real
Starlette responses. Every message type an app sends is counted in RECORD["sent"]
(read through `/record` with one worker), so a test can tell that Starlette's
FileResponse used pathsend rather than reading the file itself.
"""

import asyncio
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route


def _query(scope) -> dict:
    return {k: v[0] for k, v in parse_qs(scope["query_string"].decode()).items()}


async def _file(request: Request):
    return FileResponse(request.query_params["file"])


async def _memoryview(request: Request):
    return Response(memoryview(b"starlette memoryview body"), media_type="text/plain")


async def _early_hints(request: Request):
    await request.send_early_hints("</style.css>; rel=preload; as=style", "</app.js>; rel=preload")
    return Response(b"after hints", media_type="text/plain")


starlette_app = Starlette(
    routes=[
        Route("/send/starlette/file", _file, methods=["GET", "HEAD"]),
        Route("/send/starlette/memoryview", _memoryview),
        Route("/send/starlette/early-hints", _early_hints),
    ]
)

BIG = bytes(range(256)) * 128  # 32 KiB: over the zero-copy threshold


async def _raw(scope, receive, send, name: str, query: dict) -> None:
    if name == "list-headers":
        # Datasette's shape: [[name, value], ...] lists.
        headers = [[b"content-type", b"text/plain"], [b"x-shape", b"list"]]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"list headers"})
    elif name == "iter-headers":
        # A tuple of tuples, a generator of lists, text names.
        headers = ((b"content-type", b"text/plain"), (b"x-shape", b"tuple"))
        gen = ([n, v] for n, v in [("x-gen", "1"), (b"x-gen", bytearray(b"2"))])
        await send({"type": "http.response.start", "status": 200, "headers": headers + tuple(gen)})
        await send({"type": "http.response.body", "body": b"iter headers"})
    elif name == "bytes-like":
        body = bytearray(b"bytearray|")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body, "more_body": True})
        body[:] = b"CHANGED!!|"  # the server must have copied it
        await send(
            {"type": "http.response.body", "body": memoryview(b"memoryview|"), "more_body": True}
        )
        big = bytearray(BIG)
        await send({"type": "http.response.body", "body": memoryview(big)[1:], "more_body": True})
        big[1:10] = b"XXXXXXXXX"
        await send({"type": "http.response.body", "body": bytearray(b"|end")})
    elif name == "bad-start-header":
        headers = [[b"x-a", b"1", b"2"]]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
    elif name == "bad-start-length":
        headers = [(b"content-length", b"12abc")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
    elif name == "bad-start-status":
        await send({"type": "http.response.start", "status": 103, "headers": []})
    elif name == "bad-body":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"fine ", "more_body": True})
        await asyncio.sleep(0.05)  # the head and the first piece go out
        await send({"type": "http.response.body", "body": "not bytes"})
    elif name == "te-and-length":
        # Datasette's database download: both headers, the body in pieces.
        headers = [
            (b"content-type", b"application/octet-stream"),
            (b"content-length", b"11"),
            (b"transfer-encoding", b"chunked"),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"hello ", "more_body": True})
        await send({"type": "http.response.body", "body": b"world"})
    elif name == "te-only":
        headers = [(b"transfer-encoding", b"chunked")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"one body"})
    elif name == "pathsend":
        headers = [(b"content-type", b"application/octet-stream")]
        if "cl" in query:
            headers.append((b"content-length", query["cl"].encode()))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        if "wait" in query:
            # Let the head go out first: a file problem can then only close.
            await send({"type": "http.response.body", "body": b"", "more_body": True})
            await asyncio.sleep(0.1)
        await send({"type": "http.response.pathsend", "path": query["file"]})
    elif name == "early-hints":
        await send({"type": "http.response.early_hint", "links": [b"</a.css>; rel=preload"]})
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"final"})
    elif name == "trailers":
        headers = [(b"content-type", b"text/plain")]
        await send(
            {"type": "http.response.start", "status": 200, "headers": headers, "trailers": True}
        )
        await send({"type": "http.response.body", "body": b"part one, ", "more_body": True})
        await send({"type": "http.response.body", "body": b"part two"})
        await send(
            {
                "type": "http.response.trailers",
                "headers": [(b"x-checksum", b"abc")],
                "more_trailers": True,
            }
        )
        await send({"type": "http.response.trailers", "headers": [[b"x-count", b"2"]]})
    elif name == "extensions":
        body = ",".join(sorted(scope.get("extensions") or {})).encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})
    else:
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b"no such send path"})


async def app(scope, receive, send, record: dict) -> None:
    sent = record.setdefault("sent", {})

    async def counting_send(message):
        sent[message["type"]] = sent.get(message["type"], 0) + 1
        await send(message)

    path = scope["path"]
    if path.startswith("/send/starlette/"):
        await starlette_app(scope, receive, counting_send)
    else:
        await _raw(scope, receive, counting_send, path.removeprefix("/send/"), _query(scope))
