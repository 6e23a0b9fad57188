"""The command-line options as Python keywords, for `run()`, `Config` and `check`.

One row per option of `ferrocorn --help` (src/config.rs); tests/test_api.py checks that
the two lists agree, defaults included. Keywords take the option's name with
underscores, as uvicorn's `run()` and `Config` do.
"""

from __future__ import annotations

import difflib
import json
import os
from dataclasses import dataclass
from typing import Any

# How a keyword becomes arguments.
VALUE = "value"  # --name VALUE
FLAG = "flag"  # True: --name; False: nothing (no --no- form)
NEGATABLE = "negatable"  # True: --name; False: --no-name
BOOL_VALUE = "bool_value"  # --name true|false
MULTI = "multi"  # a list: --name ITEM for each item (a single string is one item)


@dataclass(frozen=True)
class Option:
    name: str  # keyword name, underscores
    kind: str
    type: type | tuple[type, ...]
    default: Any = None
    choices: tuple[str, ...] = ()
    flag: str = ""  # the command-line name when it isn't --<name with dashes>
    short: str = ""  # gunicorn's one-letter name, as in `ferrocorn --help`

    @property
    def cli(self) -> str:
        return self.flag or "--" + self.name.replace("_", "-")


PATH = (str, os.PathLike)
NUMBER = (int, float)
# An address (or name) list, as a comma-separated string or a list of strings (uvicorn
# takes both).
TRUST_LIST = (str, list, tuple)
LOG_LEVELS = ("trace", "debug", "info", "warning", "error", "critical")

OPTIONS: dict[str, Option] = {
    o.name: o
    for o in [
        Option("host", VALUE, str, "127.0.0.1"),
        Option("port", VALUE, int, 8000),
        Option("uds", VALUE, PATH),
        Option("fd", VALUE, int),
        Option("backlog", VALUE, int, 2048),
        Option("workers", VALUE, int, 1, short="-w"),
        Option("app_dir", VALUE, PATH, "."),
        Option("factory", FLAG, bool, False),
        Option("lifespan", VALUE, str, "auto", ("auto", "on", "off")),
        # Also "module:function", a custom loop factory (not a fixed choice).
        Option("loop", VALUE, str, "auto"),
        Option("task_impl", VALUE, str, "task", ("task", "create-task", "runner")),
        Option("root_path", VALUE, str, ""),
        Option("timeout_keep_alive", VALUE, NUMBER, 5.0),
        Option("timeout_request_header", VALUE, NUMBER, 30.0),
        Option("timeout_graceful_shutdown", VALUE, NUMBER),
        Option("log_level", VALUE, (str, int), "info", LOG_LEVELS),
        Option("access_log", NEGATABLE, bool, True),
        Option("server_header", NEGATABLE, bool, True),
        Option("date_header", NEGATABLE, bool, True),
        Option("limit_concurrency", VALUE, int),
        Option("limit_request_line", VALUE, int, 8190),
        Option("limit_request_fields", VALUE, int, 100),
        Option("limit_request_field_size", VALUE, int, 8190),
        Option("limit_request_body", VALUE, int),
        Option("timeout_request_body", VALUE, NUMBER, 30.0),
        Option("worker_connections", VALUE, int),
        Option("max_requests", VALUE, int),
        Option("max_requests_jitter", VALUE, int, 0),
        Option("timeout", VALUE, NUMBER, 30.0, short="-t"),
        Option("graceful_timeout", VALUE, NUMBER),
        Option("error_logfile", VALUE, PATH),
        Option("access_logfile", VALUE, PATH),
        Option("pid", VALUE, PATH, short="-p"),
        Option("log_config", VALUE, PATH),
        Option("use_colors", NEGATABLE, bool),
        Option("access_log_format", VALUE, str),
        Option("access_log_json", FLAG, bool, False),
        Option("access_log_exclude", MULTI, (str, list, tuple)),
        Option(
            "ws",
            VALUE,
            str,
            "auto",
            ("auto", "none", "websockets", "websockets-sansio", "wsproto"),
        ),
        Option("ws_max_size", VALUE, int, 16 * 1024 * 1024),
        Option("ws_max_queue", VALUE, int, 32),
        Option("ws_ping_interval", VALUE, NUMBER, 20.0),
        Option("ws_ping_timeout", VALUE, NUMBER, 20.0),
        Option("ws_per_message_deflate", BOOL_VALUE, bool, True),
        Option("http", VALUE, (str, int), "auto", ("auto", "1", "2", "h11", "httptools", "zttp")),
        Option("http2_max_concurrent_streams", VALUE, int, 100),
        Option("http2_max_header_list_size", VALUE, int, 65536),
        Option("http2_max_frame_size", VALUE, int, 16384),
        Option("ssl_certfile", VALUE, PATH),
        Option("ssl_keyfile", VALUE, PATH),
        Option("ssl_keyfile_password", VALUE, str),
        Option("ssl_ca_certs", VALUE, PATH),
        Option("ssl_cert_reqs", VALUE, int, 0),
        Option("ssl_min_version", VALUE, str, "1.2", ("1.2", "1.3")),
        Option("proxy_headers", NEGATABLE, bool, True),
        Option("forwarded_allow_ips", VALUE, TRUST_LIST, "127.0.0.1,::1"),
        Option("forwarded_host", FLAG, bool, False),
        Option("proxy_protocol", VALUE, str, "off", ("off", "v1", "v2", "auto")),
        Option("proxy_allow_from", VALUE, TRUST_LIST, "127.0.0.1,::1"),
        # The drop-in options (src/cli/options.rs).
        Option("config", VALUE, PATH, short="-c"),
        Option("env_file", VALUE, PATH),
        Option("env", MULTI, str, short="-e"),
        Option("header", MULTI, str),
        Option("bind", MULTI, str, short="-b"),
        Option("chdir", VALUE, PATH),
        Option("worker_class", VALUE, str, short="-k"),
        Option("preload", FLAG, bool, False),
        Option("daemon", FLAG, bool, False),
        Option("user", VALUE, str),
        Option("group", VALUE, str),
        Option("h11_max_incomplete_event_size", VALUE, int),
        Option("timeout_worker_healthcheck", VALUE, NUMBER),
        Option("reset_contextvars", FLAG, bool, False),
        Option("ssl_version", VALUE, int, 17),
        Option("ssl_ciphers", VALUE, str),
        Option("http2", FLAG, bool, False),
        Option("reload", FLAG, bool, False),
        Option("reload_dirs", MULTI, PATH, flag="--reload-dir"),
        Option("reload_includes", MULTI, PATH, flag="--reload-include"),
        Option("reload_excludes", MULTI, PATH, flag="--reload-exclude"),
        Option("reload_delay", VALUE, NUMBER, 0.25),
        Option("interface", VALUE, str, "auto", ("auto", "asgi3", "asgi2", "wsgi")),
        Option("threads", VALUE, int, 8),
        Option("timeout_write", VALUE, NUMBER, 30.0),
        Option("shutdown_delay", VALUE, NUMBER, 0.0),
        Option("health_path", VALUE, str),
        Option("ready_path", VALUE, str),
        Option("systemd_socket_name", VALUE, TRUST_LIST),
        # Drains and recycling (src/recycling/options.rs).
        Option("drain_idle_grace", VALUE, NUMBER, 2.0),
        Option("max_requests_per_connection", VALUE, int),
        Option("max_connection_age", VALUE, NUMBER),
        Option("max_connection_age_jitter", VALUE, NUMBER, 0.0),
        Option("workers_max_rss", VALUE, int),
        Option("workers_max_rss_samples", VALUE, int, 3),
        Option("workers_max_rss_interval", VALUE, NUMBER, 2.0),
        Option("workers_lifetime", VALUE, NUMBER),
        Option("workers_lifetime_jitter", VALUE, NUMBER, 0.0),
        # Spreading connections over workers (src/balance/options.rs).
        Option("accept_balance", VALUE, str, "connections", ("connections", "off")),
        Option("metrics", FLAG, bool, False),
        Option("metrics_address", VALUE, str, "127.0.0.1"),
        Option("metrics_port", VALUE, int, 9090),
        Option("statsd_host", VALUE, str, None),
        Option("statsd_prefix", VALUE, str, ""),
        Option("dogstatsd_tags", VALUE, str, ""),
        # The worker's heap upkeep (src/memory/options.rs).
        Option("malloc_trim_interval", VALUE, NUMBER, 10.0),
    ]
}

# Options whose command-line name isn't their keyword's (--reload-dir: reload_dirs).
BY_FLAG = {o.flag: o for o in OPTIONS.values() if o.flag}

# Other spellings the command line accepts (uvicorn's names for gunicorn's options).
ALIASES = {
    "access_logformat": "access_log_format",  # gunicorn's name
    "limit_max_requests": "max_requests",
    "limit_max_requests_jitter": "max_requests_jitter",
    # granian's names.
    "rss_samples": "workers_max_rss_samples",
    "rss_sample_interval": "workers_max_rss_interval",
    # uvicorn's keyword for --header: a list of (name, value) pairs.
    "headers": "header",
    # gunicorn's names.
    "keep_alive": "timeout_keep_alive",
    "log_file": "error_logfile",
    "certfile": "ssl_certfile",
    "keyfile": "ssl_keyfile",
    "ca_certs": "ssl_ca_certs",
    "cert_reqs": "ssl_cert_reqs",
    "ciphers": "ssl_ciphers",
}

# uvicorn options ferrocorn has no equivalent for: named in the error, not guessed at.
UVICORN_ONLY = {
    "ssl_context_factory",
    "timeout_notify",
    "callback_notify",
    "ws_max_queue_size",
}

# logging's numeric levels, which uvicorn accepts for log_level.
NUMERIC_LEVELS = {5: "trace", 10: "debug", 20: "info", 30: "warning", 40: "error", 50: "critical"}


def lookup(name: str) -> Option:
    """The option for a keyword, or a TypeError that says what went wrong."""
    option = OPTIONS.get(ALIASES.get(name, name))
    if option is not None:
        return option
    if name in UVICORN_ONLY:
        raise TypeError(f"ferrocorn has no option {name!r} (a uvicorn option ferrocorn lacks)")
    known = [*OPTIONS, *ALIASES]
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise TypeError(f"ferrocorn has no option {name!r}{hint}")


def normalise(name: str, value: Any) -> str | bool | list[str] | None:
    """Check one keyword's value: TypeError for a wrong type, ValueError for a value the
    option doesn't take. Returns the value as the command line spells it (a bool for a
    switch, a list of strings for a repeatable option)."""
    option = lookup(name)
    if value is None:
        return None
    if option.name == "log_config" and isinstance(value, dict):
        # uvicorn's run() and Config take a dictConfig dict too; it reaches the workers
        # as a JSON file (`to_argv`), so it must be JSON.
        try:
            json.dumps(value)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"log_config as a dict must be JSON-serialisable: {exc}") from None
        return value  # type: ignore[return-value]
    if option.kind == MULTI:
        return _items(name, option, value)
    if option.kind in (FLAG, NEGATABLE, BOOL_VALUE):
        if not isinstance(value, bool):
            raise TypeError(f"{name} must be True or False, not {value!r}")
        return value
    if option.name == "workers" and isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"  # one worker per CPU this process may use (src/balance/cpus.rs)
    if isinstance(value, bool) or not isinstance(value, option.type):
        wanted = {
            str: "a string",
            int: "an integer",
            NUMBER: "a number",
            PATH: "a path",
            (str, int): "a string",
            TRUST_LIST: "a string or a list of strings",
        }[option.type]
        raise TypeError(f"{name} must be {wanted}, not {value!r}")
    if option.type is TRUST_LIST and not isinstance(value, str):
        if not all(isinstance(item, str) for item in value):
            raise TypeError(f"{name} must be a string or a list of strings, not {value!r}")
        value = ",".join(value)
    if option.name == "log_level" and isinstance(value, int):
        if value not in NUMERIC_LEVELS:
            raise ValueError(f"log_level {value} is not one of logging's levels")
        value = NUMERIC_LEVELS[value]
    text = os.fspath(value) if isinstance(value, os.PathLike) else str(value)
    if option.choices:
        text = text.lower()
        if text not in option.choices:
            raise ValueError(f"{name} must be one of {', '.join(option.choices)}, not {value!r}")
    if option.type is int and value < 0:
        raise ValueError(f"{name} must not be negative, not {value}")
    if option.name == "port" and value > 65535:
        raise ValueError(f"port must be 0 to 65535, not {value}")
    return text


def _items(name: str, option: Option, value: Any) -> list[str]:
    """A repeatable option's items: one string, or a list of strings (for `headers`, as
    uvicorn takes them, also (name, value) pairs)."""
    items = [value] if isinstance(value, (str, os.PathLike)) else value
    if not isinstance(items, (list, tuple)):
        raise TypeError(f"{name} must be a string or a list of strings, not {value!r}")
    out = []
    for item in items:
        if option.name == "header" and isinstance(item, (list, tuple)) and len(item) == 2:
            item = f"{item[0]}:{item[1]}"
        if option.type is PATH and isinstance(item, os.PathLike):
            item = os.fspath(item)
        if not isinstance(item, str):
            raise TypeError(f"{name} must be a string or a list of strings, not {value!r}")
        out.append(item)
    return out


def _dict_to_file(config: dict[str, Any]) -> str:
    """A log_config dict as a .json file for the command line, removed when this
    process exits (it outlives the server: workers restarted later read it again)."""
    import atexit
    import tempfile

    with tempfile.NamedTemporaryFile(
        "w", prefix="ferrocorn-log-config-", suffix=".json", delete=False
    ) as file:
        json.dump(config, file)
    atexit.register(_remove_quietly, file.name)
    return file.name


def _remove_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def to_argv(app: str, options: dict[str, Any]) -> list[str]:
    """The command line for `app` and keyword options, checked as `normalise` does."""
    argv = [app]
    for name, value in options.items():
        value = normalise(name, value)
        option = lookup(name)
        if value is None or (option.kind == FLAG and value is False):
            continue
        if isinstance(value, list):
            for item in value:
                argv += [option.cli, item]
        elif option.kind == BOOL_VALUE:
            argv += [option.cli, "true" if value else "false"]
        elif isinstance(value, dict):
            argv += [option.cli, _dict_to_file(value)]
        elif value is True:
            argv.append(option.cli)
        elif value is False:
            argv.append("--no-" + option.cli[2:])
        else:
            argv += [option.cli, value]
    return argv


def takes_value(arg: str) -> bool:
    """Whether a command-line option consumes the next argument (for finding APP)."""
    if "=" in arg:
        return False
    if len(arg) == 2 and arg[0] == "-" and arg != "--":
        option = next((o for o in OPTIONS.values() if o.short == arg), None)
    elif arg.startswith("--"):
        name = arg[2:].replace("-", "_")
        option = OPTIONS.get(ALIASES.get(name, name)) or BY_FLAG.get(arg)
    else:
        return False
    return option is not None and option.kind in (VALUE, BOOL_VALUE, MULTI)
