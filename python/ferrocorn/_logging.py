"""Python logging in a worker, set up as uvicorn sets it up, so existing log configs and
apps that log through `logging.getLogger("uvicorn.error")` work unchanged.

Without --log-config, the `uvicorn` and `ferrocorn` loggers (and their `.error`,
`.access` children) write through the Rust log writer, so their lines look like the
server's own, honour --error-logfile/--access-logfile and are reopened on SIGUSR1.
With --log-config, the file alone decides, as under uvicorn.

Access records are made by Rust. They go through Python logging only when an access
logger (`uvicorn.access` or `ferrocorn.access`) would hand them to a handler or a
filter that is not ours (`access_emitter`); otherwise Rust writes the line itself.
"""

from __future__ import annotations

import http
import json
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

TRACE = 5
LEVELS = {
    "critical": logging.CRITICAL,
    "error": logging.ERROR,
    "warning": logging.WARNING,
    "info": logging.INFO,
    "debug": logging.DEBUG,
    "trace": TRACE,
}
ACCESS_LOGGERS = ("uvicorn.access", "ferrocorn.access")
# How long the master waits for its --log-config check (a handler may connect somewhere).
CHECK_TIMEOUT = 60
# The loggers uvicorn sets to --log-level, and ours.
LEVELLED_LOGGERS = (
    "uvicorn.error",
    "uvicorn.access",
    "uvicorn.asgi",
    "ferrocorn.error",
    "ferrocorn.access",
)
# uvicorn's access colours, by status class.
STATUS_COLOURS = {1: "\x1b[97m", 2: "\x1b[32m", 3: "\x1b[33m", 4: "\x1b[31m", 5: "\x1b[91m"}
LEVEL_COLOURS = {
    "TRACE": "\x1b[34m",
    "DEBUG": "\x1b[36m",
    "INFO": "\x1b[32m",
    "WARNING": "\x1b[33m",
    "ERROR": "\x1b[31m",
    "CRITICAL": "\x1b[91m",
}


class LogConfigError(Exception):
    """The --log-config file can't be read or applied; the message is one line."""


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _kind(path: str) -> tuple[str, str]:
    """The format and the file of a --log-config value: uvicorn's rule (.json, .yaml/.yml,
    anything else .ini), plus hypercorn's `json:` and `toml:` prefixes and .toml files."""
    for prefix in ("json", "toml"):
        if path.startswith(prefix + ":"):
            return prefix, path[len(prefix) + 1 :]
    if path.endswith(".json"):
        return "json", path
    if path.endswith((".yaml", ".yml")):
        return "yaml", path
    if path.endswith(".toml"):
        return "toml", path
    return "ini", path


def _parse(kind: str, file: Any) -> Any:
    if kind == "json":
        try:
            return json.load(file)
        except ValueError as exc:
            raise LogConfigError(f"not valid JSON: {exc}") from None
    if kind == "yaml":
        try:
            import yaml
        except ImportError:
            raise LogConfigError(
                "YAML log configs need PyYAML: pip install pyyaml (or use .json or .ini)"
            ) from None
        try:
            return yaml.safe_load(file)
        except yaml.YAMLError as exc:
            raise LogConfigError(f"not valid YAML: {_one_line(exc)}") from None
    try:
        import tomllib
    except ImportError:
        raise LogConfigError("TOML log configs need Python 3.11 or later") from None
    try:
        return tomllib.loads(file.read())
    except tomllib.TOMLDecodeError as exc:
        raise LogConfigError(f"not valid TOML: {exc}") from None


def _load(path: str) -> dict[str, Any] | None:
    """The dictConfig of a JSON, YAML or TOML file, or None for an .ini (fileConfig) file."""
    kind, file_path = _kind(path)
    try:
        with open(file_path, encoding="utf-8") as file:
            if kind == "ini":
                file.read()  # fileConfig ignores a file it can't read; we don't.
                return None
            config = _parse(kind, file)
    except OSError as exc:
        raise LogConfigError(f"can't read it: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise LogConfigError(f"not UTF-8 text: {exc}") from None
    if not isinstance(config, dict):
        raise LogConfigError("expected a mapping (dictConfig schema) at the top level")
    return config


def apply_log_config(path: str) -> None:
    """Apply --log-config as uvicorn does; raises LogConfigError."""
    import logging.config  # only with a config: it pulls in socketserver and more

    config = _load(path)
    try:
        if config is not None:
            logging.config.dictConfig(config)
        else:
            logging.config.fileConfig(_kind(path)[1], disable_existing_loggers=False)
    except LogConfigError:
        raise
    except Exception as exc:
        # dictConfig says which handler/formatter failed in the message; its cause (a
        # missing module, a bad argument) is chained.
        cause = f" ({_one_line(exc.__cause__)})" if exc.__cause__ is not None else ""
        raise LogConfigError(f"{_one_line(exc)}{cause}") from None


def check_log_config(path: str, app_dir: str) -> str | None:
    """For the master, before any worker starts: the problem in one line, or None.

    The config is really applied, since only dictConfig knows whether every handler and
    formatter can be built, but in a fresh interpreter started as a worker is (same
    python, same flags, --app-dir on sys.path): a config may name the app's own filter
    or formatter classes, and the master never imports app code."""
    import subprocess

    command = [
        sys.executable,
        *subprocess._args_from_interpreter_flags(),  # type: ignore[attr-defined]
        "-m",
        "ferrocorn._logging",
        path,
        app_dir,
    ]
    try:
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=CHECK_TIMEOUT, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired:
        return f"applying it took more than {CHECK_TIMEOUT} s"
    if result.returncode == 0:
        return None
    # The verdict is the last line the checker printed on stdout (anything the config's
    # own code printed comes before it); a crash leaves its traceback on stderr.
    verdict = [line for line in result.stdout.splitlines() if line.strip()]
    if result.returncode == 1 and verdict:
        return verdict[-1]
    crash = [line for line in result.stderr.splitlines() if line.strip()]
    return crash[-1] if crash else f"checking it failed (exit code {result.returncode})"


def _check_here(path: str, app_dir: str) -> int:
    """`python -m ferrocorn._logging PATH APP_DIR`: apply the config as a worker would."""
    sys.path.insert(0, os.path.abspath(app_dir))
    try:
        apply_log_config(path)
    except LogConfigError as exc:
        print(exc, flush=True)
        return 1
    return 0


def _level_name(levelno: int) -> str:
    for name in ("critical", "error", "warning", "info", "debug"):
        if levelno >= LEVELS[name]:
            return name
    return "trace"


class _ErrorLogHandler(logging.Handler):
    """Default handler of the `uvicorn` and `ferrocorn` loggers: the Rust error log
    writes the level prefix (coloured as configured) and the message."""

    def __init__(self, core: Any) -> None:
        super().__init__()
        self.core = core
        self.setFormatter(logging.Formatter("%(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.core.log(_level_name(record.levelno), self.format(record))
        except Exception:
            self.handleError(record)


class _AccessLogHandler(logging.Handler):
    """Default handler of the access loggers: uvicorn's access line, through the Rust
    access log (stdout or --access-logfile)."""

    def __init__(self, core: Any) -> None:
        super().__init__()
        self.core = core
        self.colors = bool(core.access_colors)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.core.access_line(self.render(record))
        except Exception:
            self.handleError(record)

    def render(self, record: logging.LogRecord) -> str:
        level = record.levelname
        pad = " " * max(0, 8 - len(level))
        prefix = (
            f"{LEVEL_COLOURS.get(level, '')}{level}\x1b[0m:{pad} "
            if self.colors
            else f"{level}:{pad} "
        )
        args = record.args
        if isinstance(args, tuple) and len(args) == 5:
            client, method, path, version, status = args
            try:
                phrase = http.HTTPStatus(status).phrase
            except ValueError:
                phrase = ""
            request = f"{method} {path} HTTP/{version}"
            outcome = f"{status} {phrase}"
            if self.colors:
                colour = STATUS_COLOURS.get(int(status) // 100, "\x1b[91m")
                request = f"\x1b[1m{request}\x1b[0m"
                outcome = f"{colour}{outcome}\x1b[0m"
            return f'{prefix}{client} - "{request}" {outcome}\n'
        return f"{prefix}{self.format(record)}\n"


_DEFAULT_HANDLERS = (_ErrorLogHandler, _AccessLogHandler)


def configure(core: Any, config: dict[str, Any]) -> None:
    """Set up Python logging in a worker, before the app is imported (as uvicorn does).
    Raises LogConfigError for a --log-config that can't be applied."""
    logging.addLevelName(TRACE, "TRACE")
    path = config.get("log_config")
    if path:
        apply_log_config(path)
    else:
        error_handler = _ErrorLogHandler(core)
        access_handler = _AccessLogHandler(core)
        for name in ("uvicorn", "ferrocorn"):
            logger = logging.getLogger(name)
            logger.handlers = [error_handler]
            logger.setLevel(logging.INFO)
            logger.propagate = False
        for name in ACCESS_LOGGERS:
            logger = logging.getLogger(name)
            logger.handlers = [access_handler]
            logger.propagate = False
    level = LEVELS[config["log_level"]]
    for name in LEVELLED_LOGGERS:
        logging.getLogger(name).setLevel(level)
    if config.get("no_access_log"):
        for name in ACCESS_LOGGERS:
            logging.getLogger(name).handlers = []
            logging.getLogger(name).propagate = False


def _own_taker(logger: logging.Logger) -> bool:
    """The logger itself has a filter, or a handler that isn't ours."""
    return bool(logger.filters) or any(
        not isinstance(h, _DEFAULT_HANDLERS) for h in logger.handlers
    )


def _takes_records(logger: logging.Logger) -> bool:
    """Would a record on this logger reach a filter or handler that isn't ours? Walks
    the propagation chain as Logger.callHandlers does (a parent's filters don't see
    propagated records, its handlers do)."""
    if _own_taker(logger):
        return True
    current = logger
    while current.propagate and current.parent is not None:
        current = current.parent
        if any(not isinstance(h, _DEFAULT_HANDLERS) for h in current.handlers):
            return True
    return False


def _access_state(logger: logging.Logger) -> str:
    """What the app or the log config made of one access logger: "off" (disabled or
    above INFO), "python" (a filter or a handler that isn't ours would see its records),
    "ours" (only our default handler), "nowhere" (no handler would see them)."""
    if logger.disabled or not logger.isEnabledFor(logging.INFO):
        return "off"
    if _takes_records(logger):
        return "python"
    if any(isinstance(h, _AccessLogHandler) for h in logger.handlers):
        return "ours"
    return "nowhere"


def access_route(config: dict[str, Any]) -> tuple[str, Callable[..., None] | None]:
    """Where access records go: ("rust", None), ("python", emitter) or ("off", None).

    Called once, after lifespan startup and before the first request: by then the app
    module has been imported and its startup has run, which is where apps attach
    access filters or configure logging; deciding once keeps the per-request choice a
    plain flag on the I/O thread, with no Python call when nobody listens.

    - A filter or handler of the app's or the config's on `uvicorn.access` or
      `ferrocorn.access` (or on a parent it propagates to): Python logging, records
      logged on those loggers only.
    - Both loggers as we set them up (no --log-config): the Rust line.
    - A logger disabled or raised above INFO (uvicorn's --log-level does that too), or
      left with no handler (`.handlers = []`, or a --log-config that doesn't set it up):
      no access log, as under uvicorn; but --access-log-json or --access-log-format,
      asked for explicitly, keep the Rust line when only the handler is missing.
    """
    if config.get("no_access_log"):
        return "off", None
    loggers = [logging.getLogger(n) for n in ACCESS_LOGGERS]
    states = [_access_state(lg) for lg in loggers]
    takers = [lg for lg, state in zip(loggers, states, strict=True) if state == "python"]
    # Loggers set up for access records themselves get them; failing that, the first
    # that passes them on to a parent's handler (uvicorn.access, as under uvicorn), so
    # a config with handlers on both `uvicorn` and `ferrocorn` doesn't print each
    # record twice.
    targets = [lg for lg in takers if _own_taker(lg)] or takers[:1]
    if targets:

        def emit(client: str, method: str, path: str, http_version: str, status: int) -> None:
            for logger in targets:
                if logger.isEnabledFor(logging.INFO):
                    # The message and args uvicorn's httptools/h11 protocols log.
                    logger.info(
                        '%s - "%s %s HTTP/%s" %d', client, method, path, http_version, status
                    )

        return "python", emit
    if all(state == "ours" for state in states):
        return "rust", None
    if "off" in states:
        return "off", None
    if config.get("access_log_json") or config.get("access_log_format"):
        return "rust", None
    return "off", None


def server_logger(config: dict[str, Any]) -> Callable[[str, str], None] | None:
    """With --log-config, the worker's own messages (lifespan, shutdown) go through
    Python logging so the config formats them: `uvicorn.error` when the config sets up
    uvicorn's loggers, else `ferrocorn.error`. None: write through Rust as before."""
    if not config.get("log_config"):
        return None
    uvicorn = logging.getLogger("uvicorn")
    uses_uvicorn = bool(uvicorn.handlers or logging.getLogger("uvicorn.error").handlers)
    logger = logging.getLogger("uvicorn.error" if uses_uvicorn else "ferrocorn.error")

    def log(level: str, message: str) -> None:
        logger.log(LEVELS.get(level, logging.INFO), message)

    return log


if __name__ == "__main__":
    sys.exit(_check_here(sys.argv[1], sys.argv[2]))
