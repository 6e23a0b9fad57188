"""WSGI apps for tests/test_wsgi.py, each wrapped in wsgiref's validator."""

import json
import os
import threading
import time
from wsgiref.validate import validator

CLOSED = []  # paths whose iterable's close() ran, reported by /closed


def _json(start_response, value, status="200 OK"):
    body = json.dumps(value).encode()
    start_response(
        status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    )
    return [body]


class Tracked:
    """An iterable that records its close()."""

    def __init__(self, path, chunks, delay=0.0):
        self.path = path
        self.chunks = chunks
        self.delay = delay

    def __iter__(self):
        for chunk in self.chunks:
            if self.delay:
                time.sleep(self.delay)
            yield chunk

    def close(self):
        CLOSED.append(self.path)


def raw_app(environ, start_response):
    path = environ["PATH_INFO"]
    if path.startswith("/environ"):
        keep = {
            k: v
            for k, v in environ.items()
            if isinstance(v, (str, bool, tuple)) and k != "wsgi.errors"
        }
        keep["input_type"] = type(environ["wsgi.input"]).__name__
        keep["thread"] = threading.current_thread().name
        return _json(start_response, keep)
    if path == "/echo":
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return [body]
    if path == "/lines":
        stream = environ["wsgi.input"]
        first = stream.readline()
        limited = stream.readline(3)
        rest = list(stream)
        return _json(
            start_response,
            {
                "first": first.decode(),
                "limited": limited.decode(),
                "rest": [x.decode() for x in rest],
            },
        )
    if path == "/readn":
        stream = environ["wsgi.input"]
        sizes = []
        total = 0
        while True:
            piece = stream.read(1000)
            if not piece:
                break
            sizes.append(len(piece))
            total += len(piece)
        return _json(start_response, {"total": total, "pieces": len(sizes)})
    if path == "/readlines":
        return _json(start_response, [x.decode() for x in environ["wsgi.input"].readlines()])
    if path == "/stream":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return Tracked(path, [b"one\n", b"two\n", b"three\n"])
    if path == "/slow-stream":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return Tracked(path, [b"x" * 1024] * 200, delay=0.02)
    if path == "/big":
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return Tracked(path, [b"y" * 65536] * 200)
    if path == "/write":
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"written ")
        return [b"and returned"]
    if path == "/closed":
        return _json(start_response, CLOSED)
    if path == "/error-before":
        raise RuntimeError("boom before start_response")
    if path == "/error-after":

        def gen():
            yield b"partial"
            raise RuntimeError("boom mid-body")

        start_response("200 OK", [("Content-Type", "text/plain")])
        return gen()
    if path == "/exc-info":
        start_response("200 OK", [("Content-Type", "text/plain")])
        try:
            raise ValueError("replaced")
        except ValueError:
            import sys

            start_response("500 Oops", [("Content-Type", "text/plain")], sys.exc_info())
        return [b"replaced by error page"]
    if path == "/file":
        f = open(environ["QUERY_STRING"] or __file__, "rb")  # noqa: SIM115
        if environ.get("HTTP_X_SKIP"):
            f.seek(int(environ["HTTP_X_SKIP"]))
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return environ["wsgi.file_wrapper"](f, 65536)
    if path == "/sleep":
        time.sleep(float(environ["QUERY_STRING"] or "0.5"))
        return _json(start_response, {"slept": True, "pid": os.getpid()})
    if path == "/errors":
        print("a line for the error log", file=environ["wsgi.errors"])
        return _json(start_response, "ok")
    if path == "/hang":
        while True:
            time.sleep(0.1)
    start_response("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", "9")])
    return [b"not found"]


app = validator(raw_app)


def hello(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"Hello, world!"]


class ASGI2:
    """An ASGI 2 (double-callable) app: served with --interface asgi2 or auto."""

    def __init__(self, scope):
        self.scope = scope

    async def __call__(self, receive, send):
        body = f"asgi2 {self.scope['path']}".encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})


def ambiguous(*args):
    return None


_served = [0]


def _hostile(environ, start_response):
    """The hostile-request table's app (tests/test_hostile.py): /count says how many
    requests ran, anything else reads the whole body."""
    _served[0] += 1
    if environ["PATH_INFO"] == "/count":
        body = str(_served[0]).encode()
    else:
        stream = environ["wsgi.input"]
        body = b""
        while piece := stream.read(65536):
            body += piece
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body]


hostile = validator(_hostile)
