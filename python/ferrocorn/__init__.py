"""ferrocorn: a fast ASGI application server with a gunicorn-grade process manager."""

from __future__ import annotations

from ferrocorn._ferrocorn import ClientDisconnected, __version__

__all__ = ["ClientDisconnected", "__version__", "run"]


def run(app: str, **options: object) -> int:
    """Run ferrocorn as the command line would, e.g. ``run("main:app", port=8000, workers=2)``.

    Options take the command-line names with underscores (``timeout_keep_alive=10``);
    ``True`` turns a flag on, ``False`` turns on its ``--no-`` form where there is one.
    The app must be an import string: workers are fresh interpreters that import it.
    Returns the exit code.
    """
    from ferrocorn.__main__ import serve

    if not isinstance(app, str):
        raise TypeError("ferrocorn.run() needs the app as an import string, e.g. 'main:app'")
    argv = [app]
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        if value is True:
            argv.append(flag)
        elif value is False:
            argv.append("--no-" + name.replace("_", "-"))
        elif value is not None:
            argv += [flag, str(value)]
    return serve(argv)
