"""How each request's app call runs on the event loop.

The Rust side hands over a batch of app calls, each as `(scope, receive, send)`: HTTP
requests into `Runners.queue` (a Rust queue, no Python call), then `kick()` once for the
batch; WebSockets, and every call when there is no queue, through `start_task(item)`,
a Task of its own.

`Runners` (the default) runs them inline in a few long-lived asyncio Tasks instead of
one Task per request. A Task costs about a microsecond to create, schedule, step and
free, and most requests never suspend: a hello-world or a small FastAPI endpoint runs
from start to finish in its first step, because `send()` of a whole response completes
at once. A runner takes the next request and drives the app coroutine itself, each in
a copy of the worker's base context as a Task would. When a request does suspend, its
runner stays with it until it finishes (so `asyncio.current_task()` is the same Task for
the whole request, and cancelling that Task cancels that request), and another runner
takes over the queue. The per-request loop (`RequestQueue.run`) is in
src/asgi/runner.rs. What a Task per request gives apps is kept:
- contextvars: each request runs in its own copy of the base context;
- `asyncio.current_task()`: one Task for the request's whole life, never shared with a
  request running at the same time;
- cancellation: `Task.cancel()` reaches the request being run; a runner whose request
  left a cancellation owing (`Task.cancelling()`) retires instead of passing it on.
What differs: `asyncio.all_tasks()` lists runners, not requests, and a done-callback
added to `current_task()` runs when the runner ends, not when the request does.

`PerRequestTasks` is the plain way, kept for an app that installed its own task factory
(it wants to see every request's Task) and for Python 3.10, which has no
`Task.cancelling()`.
"""

from __future__ import annotations

import asyncio
import contextvars
import sys
import types
from typing import Any

from ferrocorn import _ferrocorn

# Runners kept waiting for work when the queue is empty; more are let go.
IDLE_RUNNERS = 2


async def run_app(app: Any, scope: dict, receive: Any, send: Any) -> None:
    """One request or WebSocket in its own Task: call the app; the Rust side answers 500
    (or closes the connection) if it fails."""
    try:
        await app(scope, receive, send)
    except BaseException as exc:
        send.app_error(exc)
        if not isinstance(exc, Exception):
            raise
    else:
        send.app_done()


class PerRequestTasks:
    def __init__(self, loop: asyncio.AbstractEventLoop, app: Any) -> None:
        self.loop = loop
        self.app = app

    def start_task(self, item: tuple) -> None:
        # Through the loop: an app's task factory sees every request.
        self.loop.create_task(run_app(self.app, *item))

    def kick(self) -> None:
        pass


class Runners:
    """HTTP requests in runners; WebSocket sessions in a Task each (they suspend at
    every message, where a Task steps faster, and live long enough to amortise it)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, app: Any) -> None:
        self.loop = loop
        self.app = app
        # Requests wait here; it starts each in a copy of this context, as Tasks made
        # here would be (src/asgi/runner.rs).
        self.queue = _ferrocorn.RequestQueue(app, contextvars.copy_context())
        # Futures that idle runners wait on.
        self.idle: list[asyncio.Future[None]] = []
        # Runners that will look at the queue again before they wait or end.
        self.awake = 0

    def start_task(self, item: tuple) -> None:
        asyncio.Task(run_app(self.app, *item), loop=self.loop, name="ferrocorn")

    def kick(self) -> None:
        if self.queue and self.awake == 0:
            self._wake_one()

    def _wake_one(self) -> None:
        self.awake += 1
        while self.idle:
            waiting = self.idle.pop()
            if not waiting.done():  # not cancelled by a shutdown
                waiting.set_result(None)
                return
        asyncio.Task(self._run(), loop=self.loop, name="ferrocorn")

    async def _run(self) -> None:
        task = asyncio.current_task()
        assert task is not None
        queue = self.queue
        counted = True  # in self.awake
        try:
            while True:
                while queue:
                    stopped = queue.run(task)
                    if stopped is True:
                        return  # a cancellation is owed to the request that finished
                    if stopped is not None:
                        # Suspended: this runner stays with the request; the queue
                        # needs another.
                        context, coro, waits_on, send = stopped
                        self.awake -= 1
                        self.kick()
                        try:
                            await _finish(context, coro, waits_on, send)
                        finally:
                            self.awake += 1
                        if task.cancelling():
                            return
                # Let go of the last request: its objects hold its connection's state.
                stopped = context = coro = waits_on = send = None
                if len(self.idle) >= IDLE_RUNNERS:
                    return
                waiting = self.loop.create_future()
                self.idle.append(waiting)
                self.awake -= 1
                try:
                    await waiting
                finally:
                    # _wake_one counts the runner it wakes, even if a cancellation
                    # arrives before the runner resumes.
                    counted = not waiting.cancelled()
        finally:
            if counted:
                self.awake -= 1
            if self.queue and self.awake == 0 and not self.loop.is_closed():
                self._wake_one()


@types.coroutine
def _finish(context: contextvars.Context, coro: Any, waits_on: Any, send: Any) -> Any:
    """Run a request that suspended to its end: pass up to the runner's Task whatever
    the app waits on, pass down whatever the Task throws in (a cancellation)."""
    try:
        while True:
            try:
                yield waits_on
            except BaseException as exc:
                step, argument = coro.throw, exc
            else:
                step, argument = coro.send, None
            try:
                waits_on = context.run(step, argument)
            except StopIteration:
                break
    except BaseException as exc:
        send.app_error(exc)
        if not isinstance(exc, Exception):
            raise
    else:
        send.app_done()


def make(loop: asyncio.AbstractEventLoop, app: Any) -> PerRequestTasks | Runners:
    if loop.get_task_factory() is not None or sys.version_info < (3, 11):
        return PerRequestTasks(loop, app)
    return Runners(loop, app)
