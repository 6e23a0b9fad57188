"""An app with known answers for tests/test_metrics.py.

HTTP: `/status/CODE` reads the whole request body and answers CODE with a body of
`x-size` bytes (query `?size=N`, default 10). `/slow` waits 0.5 s first. WebSocket:
echoes each message until the client closes. `wsgi_app` is the same HTTP app as WSGI.
"""

import asyncio
from urllib.parse import parse_qs

import app_parts


def _answer(path: str, query: str) -> tuple[int, bytes]:
    size = int(parse_qs(query).get("size", ["10"])[0])
    parts = path.strip("/").split("/")
    status = int(parts[1]) if len(parts) == 2 and parts[0] == "status" else 200
    return status, b"x" * size


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        await app_parts.complete_lifespan(receive, send)
        return
    if scope["type"] == "websocket":
        await app_parts.echo_text(receive, send)
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    if scope["path"] == "/slow":
        await asyncio.sleep(0.5)
    status, body = _answer(scope["path"], scope["query_string"].decode())
    headers = [(b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def wsgi_app(environ, start_response):
    length = int(environ.get("CONTENT_LENGTH") or 0)
    environ["wsgi.input"].read(length)
    status, body = _answer(environ["PATH_INFO"], environ.get("QUERY_STRING", ""))
    start_response(f"{status} X", [("Content-Length", str(len(body)))])
    return [body]
