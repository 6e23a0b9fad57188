"""How each request's app call runs on the event loop.

The Rust side hands over a batch of app calls, each as `(scope, receive, send)`.

`PerRequestTasks` (the default, `--task-impl task`) gives every request and WebSocket
an asyncio Task of its own, as uvicorn does: the app sees a Task per request (named
"Task-N", its done-callbacks run when the request ends, an app's task factory sees every
one). On Python 3.12+ the Task starts eagerly (see `_task_maker`);
`--task-impl create-task` makes it with `loop.create_task` on every version.

`Runners` (opt-in, `--task-impl runner`) runs HTTP requests inline in a few long-lived
asyncio Tasks instead: the requests go into `Runners.queue` (a Rust queue, no Python
call), then `kick()` once for the batch. A Task costs about a microsecond to create,
schedule, step and free, and most requests never suspend: a hello-world or a small
FastAPI endpoint runs from start to finish in its first step, because `send()` of a
whole response completes at once. Each runner Task has its own copy of the worker's
base context and runs queued requests one after the other directly in it
(`RequestQueue.run`, src/asgi/runner.rs). When a request suspends, its runner stays
with it until it finishes, continuing it with a plain `await` (no per-step cost over a
Task), and another runner takes over the queue. What a Task per request gives apps is
kept:
- contextvars: a request starts in a context equal to the base context; a runner whose
  request left its context changed (a variable set and not reset) retires, and the next
  request starts in a fresh copy;
- `asyncio.current_task()`: one Task for the request's whole life, never shared with a
  request running at the same time;
- cancellation: `Task.cancel()` reaches the request being run; a runner whose request
  left a cancellation owing (`Task.cancelling()`) retires instead of passing it on.
What differs, and is why it is not the default: `asyncio.all_tasks()` lists runners,
not requests; sequential requests may share a runner Task object; and a done-callback
added to `current_task()` runs when the runner ends, not when the request does. Python
3.10 (no `Task.cancelling()`) and an app with its own task factory get Tasks anyway.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import sys
import types
from typing import Any

from ferrocorn import _ferrocorn

# Runners kept waiting for work when the queue is empty; more are let go.
IDLE_RUNNERS = 2


async def reported(send: Any, func: Any, *args: Any) -> None:
    """Await `func(*args)` (the app, or the rest of a suspended request) and tell the
    Rust side how it ended: done, or failed (it then answers 500 or closes the
    connection). A cancellation goes on up, so that the Task ends cancelled. SystemExit
    and KeyboardInterrupt raised by the app end only its request, logged as any other
    error, as under uvicorn (whose request cycle catches BaseException): the worker
    goes on serving."""
    try:
        await func(*args)
    except BaseException as exc:
        send.app_error(exc)
        if isinstance(exc, asyncio.CancelledError):
            raise
    else:
        send.app_done()


class PerRequestTasks:
    """Every app call in a Task of its own: the dispatcher (src/asgi/dispatch.rs) calls
    `create_task(reported(send, app, scope, receive, send))`, where `create_task` is
    `loop.create_task` (so that an app's task factory sees every request) or, on Python
    3.12+ with no task factory, an eager `asyncio.Task` (`_task_maker`)."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, app: Any, fresh_context: bool, eager: bool = True
    ) -> None:
        self.loop = loop
        self.app = app
        self.create_task = _task_maker(loop, fresh_context, eager)

    def kick(self) -> None:
        pass


class Runners:
    """HTTP requests in runners; WebSocket sessions in a Task each (they suspend at
    every message, where a Task steps faster, and live long enough to amortise it)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, app: Any, fresh_context: bool) -> None:
        self.loop = loop
        self.app = app
        self.create_task = _task_maker(loop, fresh_context)
        # Runners start in copies of this context, as Tasks made here would (an empty
        # one with --reset-contextvars).
        self.base_context = contextvars.Context() if fresh_context else contextvars.copy_context()
        # Requests wait here (src/asgi/runner.rs).
        self.queue = _ferrocorn.RequestQueue(app, self.base_context)
        # Futures that idle runners wait on.
        self.idle: list[asyncio.Future[None]] = []
        # Runners that will look at the queue again before they wait or end.
        self.awake = 0

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
        context = self.base_context.copy()
        asyncio.Task(self._run(context), loop=self.loop, name="ferrocorn", context=context)

    async def _run(self, context: contextvars.Context) -> None:
        """A runner: `context` is its Task's own, where its requests run."""
        task = asyncio.current_task()
        assert task is not None
        queue = self.queue
        counted = True  # in self.awake
        try:
            while True:
                while queue:
                    stopped = queue.run(task, context)
                    if stopped is True:
                        return  # the request left a cancellation owing or the context changed
                    if stopped is not None:
                        # Suspended: this runner stays with the request; the queue
                        # needs another.
                        coro, waits_on, send = stopped
                        self.awake -= 1
                        self.kick()
                        try:
                            await reported(send, _resume, coro, waits_on)
                        finally:
                            self.awake += 1
                        if task.cancelling() or not queue.unchanged(context):
                            return
                # Let go of the last request: its objects hold its connection's state.
                stopped = coro = waits_on = send = None
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
def _resume(coro: Any, waits_on: Any) -> Any:
    """Continue a coroutine that suspended on `waits_on` in its first step: pass that up
    to the runner's Task, then hand the coroutine over to `yield from`, which drives it
    at C level from there on. A cancellation thrown in before that goes to the app."""
    try:
        yield waits_on
    except GeneratorExit:
        coro.close()  # the runner's coroutine is being closed: close the app's too
        raise
    except BaseException as exc:
        try:
            waits_on = coro.throw(exc)
        except StopIteration as stop:
            return stop.value
        return (yield from _resume(coro, waits_on))
    return (yield from coro)


def _task_maker(loop: asyncio.AbstractEventLoop, fresh_context: bool, eager: bool = True) -> Any:
    """`loop.create_task`, or with --reset-contextvars one that starts each Task in a new
    empty contextvars.Context, as uvicorn's option does (context set at import time or
    in the lifespan is then not visible to requests).

    On Python 3.12+, when the app set no task factory, the Task starts eagerly (as
    `asyncio.eager_task_factory` would make it): its first step runs inside the call
    that makes it, in the Task's own context with `current_task()` returning it, instead
    of on the loop's next turn. A request that finishes in that step (most do: `send()`
    of a whole response completes at once) never waits in the loop's ready queue and is
    never added to the WeakSet of scheduled tasks. It is still a Task of its own with
    its name, done-callbacks (run by the loop when it ends), contextvars and
    cancellation; what differs is only that the app's first step runs a moment earlier.
    """
    if eager and sys.version_info >= (3, 12) and loop.get_task_factory() is None:
        if fresh_context:
            return lambda coro: asyncio.Task(
                coro, loop=loop, context=contextvars.Context(), eager_start=True
            )
        return functools.partial(asyncio.Task, loop=loop, eager_start=True)
    if not fresh_context:
        return loop.create_task
    if sys.version_info >= (3, 11):
        return lambda coro: loop.create_task(coro, context=contextvars.Context())
    return lambda coro: contextvars.Context().run(loop.create_task, coro)


def make(
    loop: asyncio.AbstractEventLoop, app: Any, impl: str, fresh_context: bool = False
) -> PerRequestTasks | Runners:
    if impl != "runner" or loop.get_task_factory() is not None or sys.version_info < (3, 11):
        return PerRequestTasks(loop, app, fresh_context, eager=impl != "create-task")
    return Runners(loop, app, fresh_context)


def is_request_task(task: asyncio.Task) -> bool:
    """Is this Task one that runs requests (a request's own, or a runner)? Told by its
    coroutine, so that keeping track costs the requests nothing."""
    code = getattr(task.get_coro(), "cr_code", None)
    return code is reported.__code__ or code is Runners._run.__code__
