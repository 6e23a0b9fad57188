"""An app that reports what a request sees of asyncio: its context variables, its Task,
its done-callbacks and cancellation, under a Task per request (the default) and under
the opt-in runners (python/ferrocorn/_requests.py).

With FERROCORN_TEST_TASK_FACTORY set, lifespan startup installs a task factory that
counts the Tasks it makes; /factory-count reports the count.
"""

import asyncio
import contextvars
import json
import os
import sys

import anyio

REQUEST_VALUE = contextvars.ContextVar("request_value")
# Set at import: every request's context starts with it, as under a Task per request.
APP_WIDE = contextvars.ContextVar("app_wide")
APP_WIDE.set("set at import")
made_by_factory = {"count": 0}
# Resources taken by /acquire and given back by a done-callback on the request's Task.
held = {"count": 0}
barrier = {"arrived": 0, "released": None}


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
        return
    handler = ROUTES[scope["path"].strip("/")]
    await handler(scope["query_string"].decode(), send)


async def lifespan(receive, send):
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            if os.environ.get("FERROCORN_TEST_TASK_FACTORY"):
                loop = asyncio.get_running_loop()

                def factory(loop, coro, **kwargs):
                    made_by_factory["count"] += 1
                    return asyncio.Task(coro, loop=loop, **kwargs)

                loop.set_task_factory(factory)
            await send({"type": "lifespan.startup.complete"})
        else:
            await send({"type": "lifespan.shutdown.complete"})
            return


async def respond(send, data, status=200):
    body = json.dumps(data).encode()
    await send({"type": "http.response.start", "status": status, "headers": []})
    await send({"type": "http.response.body", "body": body})


async def context_var(query, send):
    """What the variable held when the request started; then set it to the query, and
    (with `sleep` in the query) check it still holds that after suspending."""
    seen = REQUEST_VALUE.get(None)
    REQUEST_VALUE.set(query)
    if "sleep" in query:
        await asyncio.sleep(0.01)
    after = REQUEST_VALUE.get(None)
    await respond(send, {"seen": seen, "after": after, "app_wide": APP_WIDE.get(None)})


async def gather(query, send):
    """Waits until `n` requests are inside at once (they must all be running), and
    reports its Task before and after that suspension."""
    n = int(query)
    task = asyncio.current_task()
    if barrier["released"] is None:
        barrier["released"] = asyncio.Event()
    released = barrier["released"]
    barrier["arrived"] += 1
    if barrier["arrived"] == n:
        released.set()
        barrier["arrived"], barrier["released"] = 0, None
    await asyncio.wait_for(released.wait(), 10)
    await respond(send, {"task": id(task), "same_task_after": asyncio.current_task() is task})


async def cancel_self(query, send):
    """Asks for its own Task's cancellation and returns before it is delivered."""
    asyncio.current_task().cancel()
    await respond(send, "asked")


async def swallow_cancel(query, send):
    """Gets cancelled while waiting and swallows the CancelledError."""
    asyncio.current_task().cancel()
    try:
        await asyncio.sleep(1)
        outcome = "not cancelled"
    except asyncio.CancelledError:
        outcome = "cancelled"
    await respond(send, outcome)


async def timeouts(query, send):
    """asyncio and anyio timeouts cancel the request's own wait, and only that."""
    results = []
    try:
        if sys.version_info >= (3, 11):
            async with asyncio.timeout(0.02):
                await asyncio.sleep(5)
        else:  # asyncio.timeout() is new in 3.11
            await asyncio.wait_for(asyncio.sleep(5), 0.02)
    except asyncio.TimeoutError:
        results.append("asyncio timed out")
    with anyio.move_on_after(0.02) as scope:
        await anyio.sleep(5)
    if scope.cancelled_caught:
        results.append("anyio moved on")
    await asyncio.sleep(0.01)  # no cancellation may be left over for this wait
    results.append("slept after")
    await respond(send, results)


async def factory_count(query, send):
    await respond(send, made_by_factory["count"])


async def task_name(query, send):
    await respond(send, asyncio.current_task().get_name())


async def acquire(query, send):
    """Takes a resource for the request and releases it when the request's Task ends,
    the pattern apps use to roll back a request's database transaction."""
    held["count"] += 1

    def release(task):
        held["count"] -= 1

    asyncio.current_task().add_done_callback(release)
    if "sleep" in query:
        await asyncio.sleep(0.01)
    await respond(send, "taken")


async def started_eagerly(query, send):
    """Whether the request's first step runs eagerly, inside the call that made its Task
    (Python 3.12+: asyncio keeps such a Task in its private `_eager_tasks` set until the
    step ends), rather than on the loop's next turn."""
    eager_tasks = getattr(asyncio.tasks, "_eager_tasks", set())
    await respond(send, asyncio.current_task() in eager_tasks)


async def held_count(query, send):
    await respond(send, held["count"])


ROUTES = {
    "task-name": task_name,
    "acquire": acquire,
    "held": held_count,
    "ctx": context_var,
    "gather": gather,
    "cancel-self": cancel_self,
    "swallow-cancel": swallow_cancel,
    "timeouts": timeouts,
    "factory-count": factory_count,
    "eager": started_eagerly,
}
