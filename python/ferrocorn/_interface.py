"""Which interface an app speaks: ASGI 3, ASGI 2 or WSGI (`--interface`).

`auto` decides from the app's signature, as uvicorn's `--interface auto` tells ASGI 2
from ASGI 3, extended to WSGI:
- a coroutine function, or an object whose `__call__` is one, or a class with
  `__await__`: ASGI 3 (`app(scope, receive, send)` is awaited);
- a plain callable taking exactly one positional argument: ASGI 2 (`app(scope)` returns
  the coroutine function `instance(receive, send)`);
- taking exactly two: WSGI (`app(environ, start_response)`);
- taking three (a sync callable returning an awaitable): ASGI 3.
Anything else (`*args`, an unreadable signature) is refused with a message naming
`--interface`, rather than guessed.
"""

from __future__ import annotations

from typing import Any

from ferrocorn._app import AppLoadError

KINDS = ("asgi3", "asgi2", "wsgi")


class ASGI2App:
    """Serves an ASGI 2 (double-callable) app as ASGI 3."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        instance = self.app(scope)
        await instance(receive, send)


def _is_coroutine_function(obj: Any) -> bool:
    import inspect

    return inspect.iscoroutinefunction(obj) or (
        inspect.isfunction(getattr(obj, "__func__", None))
        and inspect.iscoroutinefunction(obj.__func__)
    )


def _positional_count(obj: Any) -> int | None:
    """Positional parameters a call takes, or None when the signature can't say."""
    import inspect

    try:
        signature = inspect.signature(obj)
    except (TypeError, ValueError):
        return None
    count = 0
    for param in signature.parameters.values():
        if param.kind is inspect.Parameter.VAR_POSITIONAL:
            return None
        if param.kind in (
            inspect.Parameter.POSITIONAL_ONLY,
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
        ):
            if param.default is inspect.Parameter.empty:
                count += 1
    return count


def guess(app: Any) -> str | None:
    """'asgi3', 'asgi2', 'wsgi', or None when the app doesn't say."""
    import inspect  # only for --interface auto: a WSGI worker doesn't need it

    if inspect.isclass(app):
        if hasattr(app, "__await__"):
            return "asgi3"
    elif _is_coroutine_function(app) or _is_coroutine_function(
        inspect.getattr_static(app, "__call__", None)
    ):
        return "asgi3"
    return {1: "asgi2", 2: "wsgi", 3: "asgi3"}.get(_positional_count(app))


def resolve(app: Any, interface: str, app_string: str) -> tuple[Any, str]:
    """The app as this worker calls it, and its interface ('asgi3' or 'wsgi')."""
    kind = interface if interface != "auto" else guess(app)
    if kind is None:
        raise AppLoadError(
            f'Could not tell whether "{app_string}" is an ASGI 3, ASGI 2 or WSGI '
            "application from its signature; pass --interface asgi3, asgi2 or wsgi."
        )
    if kind == "asgi2":
        return ASGI2App(app), "asgi3"
    return app, kind
