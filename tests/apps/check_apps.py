"""Apps for `ferrocorn check` (tests/test_check.py) and the Python API tests.

`app` answers 200 on every path but /health, which answers 500 ("unhealthy"), and 302
on /moved; it speaks lifespan and records a shutdown in FERROCORN_TEST_RECORD.
"""

import os


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                record = os.environ.get("FERROCORN_TEST_RECORD")
                if record:
                    with open(record, "a") as f:
                        f.write(f"shutdown {os.getpid()}\n")
                await send({"type": "lifespan.shutdown.complete"})
                return
    status, headers = 200, []
    if scope["path"] == "/health":
        status = 500
    elif scope["path"] == "/moved":
        status, headers = 302, [(b"location", b"/")]
    body = f"{scope['path']} {os.getpid()}".encode()
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
