"""An app for the command-line tests (tests/test_cli.py, tests/test_migrating.py):
it reports what the process and the request look like from inside."""

import asyncio
import contextvars
import json
import os
from urllib.parse import parse_qs

# Set at import time: visible to requests unless --reset-contextvars.
marker = contextvars.ContextVar("marker", default="unset")
marker.set("from-import")


class MarkedLoop(asyncio.SelectorEventLoop):
    """The loop `--loop cli_app:marked_loop` makes, so a test can see it was used."""


def marked_loop() -> asyncio.AbstractEventLoop:
    return MarkedLoop()


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            slow = os.environ.get("CLI_SLOW_START_FILE")
            if message["type"] == "lifespan.startup" and slow and os.path.exists(slow):
                await asyncio.sleep(60)  # a worker that never gets ready
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    if scope["type"] != "http":
        return
    query = parse_qs(scope["query_string"].decode())
    report = {
        "env": {name: os.environ.get(name) for name in query.get("env", [])},
        "cwd": os.getcwd(),
        "root_path": scope["root_path"],
        "http_version": scope["http_version"],
        "scheme": scope["scheme"],
        # After proxy headers / the PROXY protocol (tests/test_migrating.py checks both).
        "client": f"{scope['client'][0]}:{scope['client'][1]}" if scope["client"] else None,
        "client_host": scope["client"][0] if scope["client"] else None,
        "marker": marker.get(),
        "loop": type(asyncio.get_running_loop()).__name__,
        "pid": os.getpid(),
    }
    body = json.dumps(report).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(b"x-app", v.encode()) for v in query.get("x_app", [])]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def wsgi(environ, start_response):
    """A WSGI app for gunicorn's command lines (`-k sync`, `--threads`): `--interface
    auto` tells it from the ASGI ones."""
    body = json.dumps({"interface": "wsgi", "path": environ["PATH_INFO"]}).encode()
    start_response("200 OK", [("content-type", "application/json")])
    return [body]


def factory():
    """For `--factory`."""
    return app
