"""A worker process: `python -m ferrocorn.worker --control-fd N`, started by the master.

The interpreter starts exactly as plain `python` does; this module adds no signal
handler of its own (the Rust core handles a direct SIGTERM at the C level and undoes it
in forked children). The master sends the configuration over the control channel.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from typing import Any

from ferrocorn import _ferrocorn, _logging, _wsgi
from ferrocorn.__main__ import set_title
from ferrocorn._app import AppLoadError, load_app
from ferrocorn._interface import resolve as resolve_interface


def _forget_wakeup_fd_in_child() -> None:
    # asyncio/uvloop route signals through a wakeup fd; a child the app forks must not
    # write its own signals into this worker's loop (DEVELOPERS.md, contract point 4).
    try:
        signal.set_wakeup_fd(-1)
    except ValueError:
        pass  # Not the main thread of the child.


def _one_line(exc: BaseException) -> str:
    """`NameError: name 'x' is not defined (main.py, line 3)`: the error and where, in
    the innermost frame that is real code (not `<frozen os>`)."""
    import traceback

    where = ""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if not f.filename.startswith("<")]
    if isinstance(exc, SyntaxError) and exc.filename:
        where = f" ({exc.filename}, line {exc.lineno})"
    elif frames:
        where = f" ({frames[-1].filename}, line {frames[-1].lineno})"
    # A SyntaxError's str() already ends with "(file, line N)"; its msg is the message.
    text = exc.msg if isinstance(exc, SyntaxError) and exc.msg else str(exc)
    message = text.splitlines()[0] if text else ""
    return f"{type(exc).__name__}: {message}{where}"


def access_route(config: dict, log: Any) -> tuple[str, Any]:
    """Where access records go (see _logging.access_route), decided once the app has
    had its chance to attach access filters or handlers."""
    route, access = _logging.access_route(config)
    if route != "rust" and (config.get("access_log_json") or config.get("access_log_format")):
        log(
            "warning",
            f"The access logger was changed by the app or --log-config (access log:"
            f" {route}): --access-log-json / --access-log-format do not apply.",
        )
    return route, access


def main() -> int:
    if len(sys.argv) != 3 or sys.argv[1] != "--control-fd":
        print("ferrocorn.worker is started by the ferrocorn master", file=sys.stderr)
        return 2
    core = _ferrocorn.WorkerCore(int(sys.argv[2]))
    config = json.loads(core.config_json)
    set_title(f"ferrocorn: worker [{config['app']}]")
    os.register_at_fork(after_in_child=_forget_wakeup_fd_in_child)
    try:
        # Before the app is imported, as uvicorn: module-level loggers and handlers the
        # app makes see the configured logging.
        _logging.configure(core, config)
    except _logging.LogConfigError as exc:
        core.boot_failed(f"--log-config {config.get('log_config')}: {exc}", 2)
        return 2
    # With --log-config, the worker's own messages go through Python logging.
    log = _logging.server_logger(config) or core.log
    loop = None
    try:
        app = load_app(config["app"], config["app_dir"], config["factory"])
        app, interface = resolve_interface(app, config["interface"], config["app"])
        if interface != "wsgi":
            # Imported only here: a WSGI worker has no event loop (python/ferrocorn/_wsgi.py).
            from ferrocorn import _asgi_worker

            loop = _asgi_worker.new_loop(config["loop_kind"])
    except AppLoadError as exc:
        core.boot_failed(str(exc))
        return 3
    except BaseException as exc:
        # The whole traceback, as under uvicorn (a settings error names its fields only
        # there), and one line the master repeats as the reason it stops. The master
        # logs the traceback, so N workers failing alike show it once, not N times.
        import traceback

        # Exit 1, as Python (and so uvicorn) ends on an uncaught exception.
        core.boot_failed(
            f"Error loading ASGI app. {_one_line(exc)}",
            1,
            "".join(traceback.format_exception(exc)).rstrip(),
        )
        return 1

    def route() -> tuple[str, Any]:
        return access_route(config, log)

    if loop is None:
        return _wsgi.serve(core, config, app, log, route)
    from ferrocorn import _asgi_worker

    return _asgi_worker.serve(core, config, app, loop, log, route)


if __name__ == "__main__":
    sys.exit(main())
