"""ferrocorn: a fast ASGI application server with a gunicorn-grade process manager.

Python API (docs/api.md): `run()` serves in this process as the command line does;
`Config` and `Server` run a server as a child process from asyncio code;
`ferrocorn.testing.serve()` serves for the length of a test.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ferrocorn._ferrocorn import ClientDisconnected, __version__

if TYPE_CHECKING:
    from ferrocorn._process import StartupFailed
    from ferrocorn._server import Config, Server

__all__ = ["ClientDisconnected", "Config", "Server", "StartupFailed", "__version__", "run"]


def __getattr__(name: str) -> Any:
    # Workers import this package too: the API modules load only when used.
    if name in ("Config", "Server"):
        from ferrocorn import _server

        return getattr(_server, name)
    if name == "StartupFailed":
        from ferrocorn._process import StartupFailed

        return StartupFailed
    if name == "testing":
        import importlib

        return importlib.import_module("ferrocorn.testing")
    raise AttributeError(f"module 'ferrocorn' has no attribute {name!r}")


def run(app: Any, **options: Any) -> int:
    """Run ferrocorn as the command line would, e.g. ``run("main:app", port=8000, workers=2)``.

    This process becomes the master (it owns the signals until the server stops), as
    uvicorn's ``run()`` does; from asyncio code use ``Server`` instead. Options take the
    command-line names with underscores (``timeout_keep_alive=10``); ``True`` turns a
    flag on, ``False`` turns on its ``--no-`` form (``access_log=False``); an unknown
    name raises TypeError, a bad value TypeError or ValueError. The app is an import
    string, or a module-level object, which is served by its import string since
    workers are fresh interpreters that import it (ValueError when it has none).
    Returns the exit code.
    """
    from ferrocorn import _options
    from ferrocorn.__main__ import serve
    from ferrocorn._server import import_string

    for name, value in options.items():
        _options.normalise(name, value)
    target, app_dir = import_string(app)
    if app_dir is not None and options.get("app_dir") is None:
        options = {**options, "app_dir": app_dir}
    return serve(_options.to_argv(target, options))
