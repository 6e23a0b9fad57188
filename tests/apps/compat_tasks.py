"""A raw ASGI app that ties resources to the request's asyncio Task.

/acquire takes a resource and gives it back from a done-callback on
`asyncio.current_task()` (a pattern of per-request pools and tracing libraries), with
`?suspend` after awaiting once; /held reports how many are still taken. /task reports
the request's Task: its name and whether it is the Task the previous /task request ran
in (the previous one is kept referenced, so its id cannot be reused). /exit and /interrupt
raise SystemExit and KeyboardInterrupt (after awaiting once with `?suspend`); /pid
reports the worker's pid.
"""

import asyncio
import itertools
import json
import os

held: set[int] = set()
tokens = itertools.count()
previous_task: list[asyncio.Task] = []


async def app(scope, receive, send):
    if scope["type"] != "http":
        return  # lifespan: unsupported
    path, query = scope["path"], scope["query_string"].decode()
    if path == "/acquire":
        token = next(tokens)
        held.add(token)
        asyncio.current_task().add_done_callback(lambda task: held.discard(token))
        if query == "suspend":
            await asyncio.sleep(0.005)
        await respond(send, "acquired")
    elif path in ("/exit", "/interrupt"):
        if query == "suspend":
            await asyncio.sleep(0.005)
        raise SystemExit(4) if path == "/exit" else KeyboardInterrupt
    elif path == "/pid":
        await respond(send, os.getpid())
    elif path == "/held":
        await respond(send, len(held))
    elif path == "/task":
        if query == "suspend":
            await asyncio.sleep(0.005)
        task = asyncio.current_task()
        same = bool(previous_task) and previous_task[0] is task
        previous_task[:] = [task]
        await respond(send, {"name": task.get_name(), "same_as_previous": same})
    else:
        await respond(send, "not found", 404)


async def respond(send, data, status=200):
    body = json.dumps(data).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})
