"""`ferrocorn.Config` and `ferrocorn.Server`: uvicorn's Python API over a child process.

`await Server(config).serve()` runs the ferrocorn master as a child process
(`python -m ferrocorn._child ...`) rather than inside the caller: the master owns
process signals and its workers are fresh interpreters, so the caller's process (a test
session, a notebook, an application that embeds a server) keeps plain-python state.
The master's log lines tell where it listens and when every worker is ready.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
import types
from typing import Any

from ferrocorn import _options
from ferrocorn._process import Master, StartupFailed

__all__ = ["Config", "Server", "StartupFailed", "import_string"]


class Config:
    """The server's options, as `ferrocorn.run()` and the command line take them.

    `app` is an import string ("main:app"), or a module-level app object (resolved to
    its import string, see `import_string`). Options are the command-line options with
    underscores (`timeout_keep_alive=10`, `access_log=False`); an unknown name is a
    TypeError and a value of the wrong type a TypeError or ValueError, raised here.
    Reading `config.<option>` gives the value set or the default.
    """

    def __init__(self, app: Any, **options: Any) -> None:
        for name, value in options.items():
            _options.normalise(name, value)
        self.app = app
        self.options: dict[str, Any] = {_options.lookup(k).name: v for k, v in options.items()}
        app_dir = self.options.get("app_dir")
        self.import_string, found_dir = import_string(app)
        if found_dir is not None and app_dir is None:
            self.options["app_dir"] = found_dir

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name in ("app", "options", "import_string"):
            raise AttributeError(name)
        try:
            option = _options.lookup(name)
        except TypeError:
            raise AttributeError(f"'Config' object has no attribute {name!r}") from None
        value = self.options.get(option.name)
        return option.default if value is None else value

    def to_argv(self) -> list[str]:
        """The `ferrocorn` command-line arguments for this configuration."""
        return _options.to_argv(self.import_string, self.options)

    def __repr__(self) -> str:
        opts = "".join(f", {k}={v!r}" for k, v in self.options.items())
        return f"Config({self.import_string!r}{opts})"


class Server:
    """A ferrocorn server in a child process, with uvicorn's `Server` interface.

    `await server.serve()` starts it and returns when it has stopped. Meanwhile
    `await server.wait_started()` returns once every worker has run lifespan startup
    (StartupFailed if the server exits first), after which `server.started` is True and
    `server.url`, `server.host`, `server.port` (or `server.uds`) say where it listens,
    with `port=0` resolved. Stop it with `server.should_exit = True` (uvicorn's way),
    `server.stop()` (from any thread) or `await server.shutdown()` (which waits): a
    graceful stop (SIGTERM to the master: requests drain, lifespan shutdown runs).
    `server.force_exit = True` makes it a quick stop. Cancelling `serve()` stops the
    server too. `server.exit_code` is the master's exit code once it has stopped.
    """

    def __init__(self, config: Config) -> None:
        self.config = config
        self.started = False
        self.should_exit = False
        self.force_exit = False
        self.exit_code: int | None = None
        self.url: str | None = None
        self.host: str | None = None
        self.port: int | None = None
        self.uds: str | None = None
        self.pid: int | None = None
        self._master: Master | None = None
        self._started_event = threading.Event()
        self._exited_event = threading.Event()
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ running
    def _start(self, sockets: list[Any] | None = None) -> Master:
        """Start the master process (non-blocking); the same for sync and async use."""
        if self._master is not None:
            raise RuntimeError("this Server has already been started")
        level = self.config.log_level
        options = {k: v for k, v in self.config.options.items() if k != "log_level"}
        pass_fds: tuple[int, ...] = ()
        if sockets:
            # uvicorn's serve(sockets=[sock]): the master serves it as --fd.
            if len(sockets) != 1:
                raise ValueError("ferrocorn serves one listening socket, not several")
            fd = sockets[0].fileno()
            options = {k: v for k, v in options.items() if k not in ("uds", "fd")}
            options["fd"] = fd
            pass_fds = (fd,)
        argv = _options.to_argv(self.config.import_string, options)
        master = Master(
            argv,
            log_level=str(_options.normalise("log_level", level)),
            error_logfile=os.fspath(logfile) if (logfile := self.config.error_logfile) else None,
            on_ready=self._on_ready,
            on_exit=self._on_exit,
            pass_fds=pass_fds,
        )
        self._master = master
        master.start()
        self.pid = master.pid
        return master

    def _on_ready(self) -> None:
        assert self._master is not None
        target = self._master.listeners[0] if self._master.listeners else ""
        if target.startswith("unix socket "):
            self.uds = target[len("unix socket ") :]
        elif "://" in target:
            self.url = target
            host, _, port = target.split("://", 1)[1].rpartition(":")
            self.host = host.strip("[]")
            self.port = int(port)
        self.started = True
        self._started_event.set()
        self._wake()

    def _on_exit(self) -> None:
        assert self._master is not None
        self.exit_code = self._master.exit_code
        self._exited_event.set()
        self._wake()

    def _wake(self) -> None:
        with self._lock:
            waiters, self._waiters = self._waiters, []
        for loop, future in waiters:
            try:
                loop.call_soon_threadsafe(_resolve, future)
            except RuntimeError:
                pass  # that loop is closed

    async def _changed(self, timeout: float | None) -> None:
        """Wait until the server is ready or exits, or `timeout` passes. (A plain
        future and call_later, not asyncio.wait_for, which before Python 3.12 can
        swallow a cancellation that arrives as it times out.)"""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self._lock:
            self._waiters.append((loop, future))
        if self._exited_event.is_set():
            _resolve(future)
        timer = None if timeout is None else loop.call_later(timeout, _resolve, future)
        try:
            await future
        finally:
            if timer is not None:
                timer.cancel()
            with self._lock:
                if (loop, future) in self._waiters:
                    self._waiters.remove((loop, future))

    async def serve(self, sockets: list[Any] | None = None) -> None:
        """Run the server until it stops (see the class docstring). `sockets`: one
        listening socket to serve on instead of binding (as uvicorn's); this process
        keeps it open."""
        master = self._start(sockets)
        signalled: int | None = None
        try:
            while not self._exited_event.is_set():
                wanted = signal.SIGINT if self.force_exit else signal.SIGTERM
                if (self.should_exit or self.force_exit) and signalled != wanted:
                    master.signal(wanted)
                    signalled = wanted
                await self._changed(0.1)
        except BaseException:
            # Cancelled (or interrupted): never leave the server behind.
            master.stop(graceful=True)
            try:
                while not self._exited_event.is_set():
                    await self._changed(0.1)
            except BaseException:
                master.signal(signal.SIGKILL)
                raise
            raise

    async def wait_started(self, timeout: float | None = None) -> None:
        """Return once every worker is ready (lifespan startup done). Raises
        StartupFailed if the server exits first, TimeoutError after `timeout` seconds."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while not self.started:
            if self._exited_event.is_set():
                assert self._master is not None
                raise self._master.failure()
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                raise TimeoutError(f"ferrocorn was not ready within {timeout} s")
            await self._changed(0.1 if remaining is None else min(0.1, remaining))

    def stop(self) -> None:
        """Ask for a graceful stop; returns at once. Safe from any thread."""
        self.should_exit = True
        if self._master is not None:
            self._master.stop(graceful=not self.force_exit)

    async def shutdown(self, sockets: list[Any] | None = None) -> None:
        """Stop gracefully and wait until the server has exited."""
        self.stop()
        while self._master is not None and not self._exited_event.is_set():
            await self._changed(0.1)

    def run(self, sockets: list[Any] | None = None) -> int | None:
        """Serve until stopped, blocking (uvicorn's `Server.run`); Ctrl-C stops the
        server gracefully. Returns the master's exit code."""
        try:
            asyncio.run(self.serve(sockets=sockets))
        except KeyboardInterrupt:
            pass
        return self.exit_code

    @property
    def log(self) -> str:
        """Everything the server has logged so far (its error log)."""
        return "" if self._master is None else self._master.log_text()


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


# ------------------------------------------------------------ app -> import string
def import_string(app: Any) -> tuple[str, str | None]:
    """The "module:attribute" a worker imports to get `app`, and the directory to
    import it from when that isn't the current one (else None).

    A string is taken as is. An object must be a module-level attribute of an
    importable module: it is looked for, by identity, in the module named by
    `app.__module__`, then in `__main__` (a script: imported by its file name), then in
    every other loaded module. Workers are separate interpreters that import the app,
    so an object created in a notebook cell or inside a function can't be served:
    that is a ValueError, as uvicorn's for an object with `workers` or `reload`.
    """
    if isinstance(app, str):
        return app, None
    modules: list[types.ModuleType] = []
    own = sys.modules.get(getattr(app, "__module__", None) or "")
    if own is not None:
        modules.append(own)
    main = sys.modules.get("__main__")
    if main is not None and main is not own:
        modules.append(main)
    rest = [m for m in list(sys.modules.values()) if isinstance(m, types.ModuleType)]
    # Test modules last: they import the app from where it is defined.
    rest.sort(key=lambda m: _is_test_module(m.__name__))
    modules += [m for m in rest if m not in modules and not m.__name__.startswith("ferrocorn")]
    for module in modules:
        try:
            names = [n for n, v in list(vars(module).items()) if v is app]
        except TypeError:
            continue
        if not names:
            continue
        name = "app" if "app" in names else sorted(names)[0]
        resolved = _importable(module)
        if resolved is not None:
            module_name, app_dir = resolved
            return f"{module_name}:{name}", app_dir
    where = getattr(app, "__module__", None)
    raise ValueError(
        "ferrocorn runs the app in worker processes that import it, so it needs the app "
        "as an import string such as 'main:app' (or an object that is a module-level "
        f"attribute of an importable module); {app!r}"
        + (f" (from {where!r})" if where else "")
        + " was not found as one"
    )


def _is_test_module(name: str) -> bool:
    last = name.rpartition(".")[2]
    return last.startswith("test_") or last.endswith("_test") or last == "conftest"


def _importable(module: types.ModuleType) -> tuple[str, str | None] | None:
    """(module name, directory to import it from or None) for a loaded module."""
    name = module.__name__
    path = getattr(module, "__file__", None)
    if name == "__main__":
        spec = getattr(module, "__spec__", None)
        if spec is not None and spec.name and spec.name != "__main__":
            name = spec.name  # python -m package.module
        elif path:
            stem = os.path.splitext(os.path.basename(path))[0]
            if not stem.isidentifier():
                return None
            directory = os.path.dirname(os.path.abspath(path))
            return stem, _unless_cwd(directory)
        else:
            return None  # an interactive session or a notebook
    if not path:
        return name, None  # a namespace or built-in module: importable by name alone
    # The directory the top-level package lives in, so the worker finds it even when
    # it is on this process's sys.path only (a test runner's rootdir, say).
    root = os.path.abspath(path)
    depth = name.count(".") + (1 if os.path.basename(root).startswith("__init__.") else 0)
    root = os.path.dirname(root)
    for _ in range(depth):
        root = os.path.dirname(root)
    return name, _unless_cwd(root)


def _unless_cwd(directory: str) -> str | None:
    try:
        return None if os.path.samefile(directory, os.getcwd()) else directory
    except OSError:
        return directory
