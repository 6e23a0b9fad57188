"""An ASGI app for the fault-injection tests (tests/test_faults.py); the path picks it:

/            the worker's pid, so a client knows which worker serves its connection
/leak        opens /dev/null and never closes it: one leaked fd per request
/block       blocks the event loop (time.sleep, not await) for `s` seconds (default 2)
             with probability `p` from the query string (seeded, so runs repeat)
/error       raises, so the error log gets a traceback
"""

import os
import random
import time
from urllib.parse import parse_qs

import app_parts

leaked: list[int] = []
chance = random.Random(14)


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        await app_parts.complete_lifespan(receive, send)
        return
    path = scope["path"]
    if path == "/leak":
        leaked.append(os.open("/dev/null", os.O_RDONLY))
        body = str(len(leaked)).encode()
    elif path == "/block":
        query = parse_qs(scope["query_string"].decode())
        blocked = chance.random() < float(query.get("p", ["1"])[0])
        if blocked:
            time.sleep(float(query.get("s", ["2"])[0]))  # blocks the loop on purpose
        body = b"blocked" if blocked else b"free"
    elif path == "/error":
        raise RuntimeError("fault_app: an error for the error log")
    else:
        body = str(os.getpid()).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
