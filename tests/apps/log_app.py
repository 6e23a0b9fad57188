"""Apps for tests/test_logging.py: they log through uvicorn's and ferrocorn's logger
names, and attach access-log filters the way apps and recipes do."""

import logging
import os
from urllib.parse import parse_qs

# Logged at import: the worker has set logging up before it imports the app.
logging.getLogger("uvicorn.error").info("log_app imported")


class HideHealth(logging.Filter):
    """The usual recipe: drop access records for /health (uvicorn's args: client_addr,
    method, full_path, http_version, status_code)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.args[2] != "/health"


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
        return
    if scope["type"] != "http":
        return
    query = parse_qs(scope["query_string"].decode())
    if scope["path"] == "/log":
        message = query.get("msg", ["hello"])[0]
        logging.getLogger("uvicorn.error").info("uvicorn-said %s", message)
        logging.getLogger("ferrocorn.error").warning("ferrocorn-said %s", message)
        logging.getLogger("uvicorn").info("uvicorn-root-said %s", message)
        logging.getLogger("uvicorn.error").debug("uvicorn-debug %s", message)
    body = b"hello"
    await send(
        {
            "type": "http.response.start",
            "status": int(query.get("status", ["200"])[0]),
            "headers": [
                (b"content-length", str(len(body)).encode()),
                (b"x-out", b"out-value"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def lifespan(receive, send, on_startup=None):
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            if on_startup is not None:
                on_startup()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def _attach_filter() -> None:
    logging.getLogger("uvicorn.access").addFilter(HideHealth())


async def filtered_app(scope, receive, send):
    """Attaches the /health filter in lifespan startup, as a FastAPI app would."""
    if scope["type"] == "lifespan":
        await lifespan(receive, send, on_startup=_attach_filter)
        return
    await app(scope, receive, send)


def _silence() -> None:
    """The recipes apps use to turn uvicorn's access log off, picked by LOG_APP_SILENCE."""
    access = logging.getLogger("uvicorn.access")
    how = os.environ["LOG_APP_SILENCE"]
    if how == "handlers":
        access.handlers = []
    elif how == "level":
        access.setLevel(logging.WARNING)
    elif how == "disabled":
        access.disabled = True


async def silenced_app(scope, receive, send):
    if scope["type"] == "lifespan":
        await lifespan(receive, send, on_startup=_silence)
        return
    await app(scope, receive, send)


def wsgi_app(environ, start_response):
    """A WSGI app of a module that attaches the /health filter at import, as Flask and
    Django projects do in their settings or app factory."""
    if environ["PATH_INFO"] == "/log":
        logging.getLogger("uvicorn.error").info("wsgi-said %s", environ["QUERY_STRING"])
    start_response("200 OK", [("Content-Length", "5")])
    return [b"hello"]
