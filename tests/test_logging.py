"""Logging that fits existing setups (issue 12, item 3): --log-config in uvicorn's three
formats, uvicorn's logger names, access records through Python logging when a filter
or handler is attached, --use-colors, gunicorn's access-log format, the JSON access
log against hostile input, and --access-log-exclude. Real servers, real clients."""

from __future__ import annotations

import base64
import datetime
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

import ferrocorn
import httpx
import pytest

from tests.server import APPS_DIR, Server, raw_exchange, run_to_exit

ERR_FORMAT = "CFG|%(name)s|%(levelname)s|%(message)s"
ACCESS_FORMAT = "ACCESS|%(name)s|%(message)s|%(args)s"

DICT_CONFIG = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"hide_health": {"()": "log_app.HideHealth"}},
    "formatters": {
        "plain": {"format": ERR_FORMAT},
        "access": {"format": ACCESS_FORMAT},
    },
    "handlers": {
        "err": {
            "class": "logging.StreamHandler",
            "formatter": "plain",
            "stream": "ext://sys.stderr",
        },
        "out": {
            "class": "logging.StreamHandler",
            "formatter": "access",
            "stream": "ext://sys.stdout",
            "filters": ["hide_health"],
        },
    },
    "loggers": {
        "uvicorn": {"handlers": ["err"], "level": "INFO", "propagate": False},
        "uvicorn.error": {"level": "INFO"},
        "uvicorn.access": {"handlers": ["out"], "level": "INFO", "propagate": False},
        "ferrocorn": {"handlers": ["err"], "level": "INFO", "propagate": False},
    },
}

YAML_CONFIG = """\
version: 1
disable_existing_loggers: false
formatters:
  plain:
    format: "CFG|%(name)s|%(levelname)s|%(message)s"
  access:
    format: "ACCESS|%(name)s|%(message)s|%(args)s"
handlers:
  err:
    class: logging.StreamHandler
    formatter: plain
    stream: ext://sys.stderr
  out:
    class: logging.StreamHandler
    formatter: access
    stream: ext://sys.stdout
loggers:
  uvicorn:
    handlers: [err]
    level: INFO
    propagate: false
  uvicorn.error:
    level: INFO
  uvicorn.access:
    handlers: [out]
    level: INFO
    propagate: false
  ferrocorn:
    handlers: [err]
    level: INFO
    propagate: false
"""

INI_CONFIG = """\
[loggers]
keys=root,uvicorn,uvicorn_error,uvicorn_access,ferrocorn

[handlers]
keys=err,out

[formatters]
keys=plain,access

[logger_root]
level=WARNING
handlers=

[logger_uvicorn]
level=INFO
handlers=err
propagate=0
qualname=uvicorn

[logger_uvicorn_error]
level=INFO
handlers=
propagate=1
qualname=uvicorn.error

[logger_uvicorn_access]
level=INFO
handlers=out
propagate=0
qualname=uvicorn.access

[logger_ferrocorn]
level=INFO
handlers=err
propagate=0
qualname=ferrocorn

[handler_err]
class=StreamHandler
formatter=plain
args=(sys.stderr,)

[handler_out]
class=StreamHandler
formatter=access
args=(sys.stdout,)

[formatter_plain]
format=CFG|%(name)s|%(levelname)s|%(message)s

[formatter_access]
format=ACCESS|%(name)s|%(message)s|%(args)s
"""


TOML_CONFIG = """\
version = 1
disable_existing_loggers = false

[formatters.plain]
format = "CFG|%(name)s|%(levelname)s|%(message)s"

[formatters.access]
format = "ACCESS|%(name)s|%(message)s|%(args)s"

[handlers.err]
class = "logging.StreamHandler"
formatter = "plain"
stream = "ext://sys.stderr"

[handlers.out]
class = "logging.StreamHandler"
formatter = "access"
stream = "ext://sys.stdout"

[loggers.uvicorn]
handlers = ["err"]
level = "INFO"
propagate = false

[loggers."uvicorn.error"]
level = "INFO"

[loggers."uvicorn.access"]
handlers = ["out"]
level = "INFO"
propagate = false

[loggers.ferrocorn]
handlers = ["err"]
level = "INFO"
propagate = false
"""


def write_config(tmp_path, kind: str):
    """A config file for `kind`; "json:" and "toml:" are hypercorn's prefixed forms."""
    suffix = {"json:": "cfg", "toml:": "cfg"}.get(kind, kind)
    path = tmp_path / f"log.{suffix}"
    if kind in ("json", "json:"):
        path.write_text(json.dumps(DICT_CONFIG))
    elif kind == "yaml":
        path.write_text(YAML_CONFIG)
    elif kind in ("toml", "toml:"):
        path.write_text(TOML_CONFIG)
    else:
        path.write_text(INI_CONFIG)
    return f"{kind}{path}" if kind.endswith(":") else path


def get(s: Server, target: str, **kw) -> httpx.Response:
    return httpx.get(f"{s.url}{target}", timeout=5, **kw)


NEEDS_TOMLLIB = pytest.mark.skipif(sys.version_info < (3, 11), reason="tomllib is 3.11+")


@pytest.mark.parametrize(
    "kind",
    [
        "json",
        "yaml",
        "ini",
        pytest.param("toml", marks=NEEDS_TOMLLIB),
        "json:",
        pytest.param("toml:", marks=NEEDS_TOMLLIB),
    ],
)
def test_log_config_formats_every_logger(tmp_path, kind):
    """Each of uvicorn's formats is applied in the worker before the app is imported:
    the app's uvicorn.* and ferrocorn.* lines, the server's own lifespan lines and the
    access records all come out as the config says."""
    config = write_config(tmp_path, kind)
    with Server("log_app:app", "--log-config", str(config)) as s:
        assert get(s, "/log?msg=m1").text == "hello"
        s.wait_for_log(r"(?m)^CFG\|uvicorn\.error\|INFO\|uvicorn-said m1$")
        s.wait_for_log(r"(?m)^CFG\|ferrocorn\.error\|WARNING\|ferrocorn-said m1$")
        s.wait_for_log(r"(?m)^CFG\|uvicorn\|INFO\|uvicorn-root-said m1$")
        # The worker's own messages go through the configured uvicorn.error logger.
        s.wait_for_log(r"(?m)^CFG\|uvicorn\.error\|INFO\|Application startup complete\.$")
        if not kind.startswith("json"):
            # Applied before the app was imported: its import-time line is formatted
            # too. (The JSON config names log_app's filter class, so dictConfig itself
            # imports log_app before its handlers exist.)
            s.wait_for_log(r"(?m)^CFG\|uvicorn\.error\|INFO\|log_app imported$")
        line = s.wait_for_log(r"(?m)^ACCESS\|uvicorn\.access\|(.*)\|(\(.*\))$", stdout=True)
        assert re.fullmatch(r'127\.0\.0\.1:\d+ - "GET /log\?msg=m1 HTTP/1\.1" 200', line[1])
        client, method, path, version, status = eval(line[2])  # a tuple's repr
        assert (method, path, version, status) == ("GET", "/log?msg=m1", "1.1", 200)
        assert re.fullmatch(r"127\.0\.0\.1:\d+", client)
        if kind.startswith("json"):
            # The config's filter (log_app.HideHealth, imported from --app-dir) hides /health.
            get(s, "/health")
            get(s, "/after-health")
            s.wait_for_log(r"GET /after-health HTTP", stdout=True)
            assert "/health HTTP" not in s.stdout_text()
    # Each record once: not again through ferrocorn.access to the `ferrocorn` handler.
    assert "ferrocorn.access" not in s.stderr_text()
    # Nothing went through the Rust writer's prefix for the configured loggers.
    assert "uvicorn-said" not in s.stdout_text()
    assert not re.search(r"(?m)^INFO:     uvicorn-said", s.stderr_text())


def test_uvicorns_own_formatters_work_unchanged(tmp_path):
    """A config written for uvicorn, naming uvicorn.logging's formatters (they read
    record.args as uvicorn's five access fields)."""
    pytest.importorskip("uvicorn")
    config = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "default": {
                "()": "uvicorn.logging.DefaultFormatter",
                "fmt": "UV %(levelprefix)s %(message)s",
                "use_colors": False,
            },
            "access": {
                "()": "uvicorn.logging.AccessFormatter",
                "fmt": 'UV %(levelprefix)s %(client_addr)s - "%(request_line)s" %(status_code)s',
                "use_colors": False,
            },
        },
        "handlers": {
            "default": {
                "formatter": "default",
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
            },
            "access": {
                "formatter": "access",
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stdout",
            },
        },
        "loggers": {
            "uvicorn": {"handlers": ["default"], "level": "INFO", "propagate": False},
            "uvicorn.error": {"level": "INFO"},
            "uvicorn.access": {"handlers": ["access"], "level": "INFO", "propagate": False},
        },
    }
    path = tmp_path / "uvicorn-log.json"
    path.write_text(json.dumps(config))
    with Server("log_app:app", "--log-config", str(path)) as s:
        get(s, "/log?msg=uv")
        s.wait_for_log(r"(?m)^UV INFO:     uvicorn-said uv$")
        s.wait_for_log(r"(?m)^UV INFO:     Application startup complete\.$")
        s.wait_for_log(
            r'(?m)^UV INFO:     127\.0\.0\.1:\d+ - "GET /log\?msg=uv HTTP/1\.1" 200 OK$',
            stdout=True,
        )


def test_apps_logging_to_uvicorn_error_print_by_default():
    """Without --log-config, logging.getLogger("uvicorn.error") prints as under uvicorn
    (uvicorn's default config gives the `uvicorn` logger a stderr handler)."""
    with Server("log_app:app") as s:
        s.wait_for_log(r"(?m)^INFO:     log_app imported$")
        assert get(s, "/log?msg=m2").status_code == 200
        s.wait_for_log(r"(?m)^INFO:     uvicorn-said m2$")
        s.wait_for_log(r"(?m)^WARNING:  ferrocorn-said m2$")
        s.wait_for_log(r"(?m)^INFO:     uvicorn-root-said m2$")
        # The access line is still the Rust one (no filter attached).
        s.wait_for_log(
            r'(?m)^INFO:     127\.0\.0\.1:\d+ - "GET /log\?msg=m2 HTTP/1\.1" 200 OK$', stdout=True
        )


def test_log_level_applies_to_the_uvicorn_loggers():
    """As uvicorn: --log-level sets uvicorn.error's level (debug lines show with debug)."""
    with Server("log_app:app", "--log-level", "debug") as s:
        get(s, "/log?msg=m3")
        s.wait_for_log(r"(?m)^DEBUG:    uvicorn-debug m3$")
    with Server("log_app:app") as s:
        get(s, "/log?msg=m3")
        s.wait_for_log(r"(?m)^INFO:     uvicorn-said m3$")
        time.sleep(0.3)
        assert "uvicorn-debug" not in s.stderr_text()


@pytest.mark.parametrize("http2", [False, True])
def test_a_filter_attached_in_lifespan_startup_hides_health(http2):
    """The usual recipe (a logging.Filter on uvicorn.access reading record.args[2]),
    attached in lifespan startup: /health lines go, the others stay, formatted as the
    Rust line is."""
    with Server("log_app:filtered_app") as s:
        with httpx.Client(http1=not http2, http2=http2, timeout=5) as client:
            for path in ("/health", "/other", "/health", "/sentinel"):
                assert client.get(f"{s.url}{path}").status_code == 200
        version = "2" if http2 else "1.1"
        s.wait_for_log(rf'GET /sentinel HTTP/{re.escape(version)}" 200 OK', stdout=True)
        out = s.stdout_text()
        assert re.search(
            rf'(?m)^INFO:     127\.0\.0\.1:\d+ - "GET /other HTTP/{re.escape(version)}" 200 OK$',
            out,
        ), out
        assert "/health" not in out


def test_wsgi_access_records_go_through_python_logging_too():
    """A WSGI app's module attaches the /health filter at import: its records go through
    Python logging (on the worker's main thread), as the ASGI ones do."""
    with Server("log_wsgi_app:wsgi_app", "--interface", "wsgi") as s:
        with httpx.Client(timeout=5) as client:
            for path in ("/health", "/other", "/health", "/sentinel"):
                assert client.get(f"{s.url}{path}").status_code == 200
        s.wait_for_log(r'GET /sentinel HTTP/1\.1" 200 OK', stdout=True)
        out = s.stdout_text()
        assert re.search(
            r'(?m)^INFO:     127\.0\.0\.1:\d+ - "GET /other HTTP/1\.1" 200 OK$', out
        ), out
        assert "/health" not in out
    # Without a filter the Rust line stays, /health included.
    with Server("log_app:wsgi_app", "--interface", "wsgi") as s:
        get(s, "/health")
        s.wait_for_log(r'GET /health HTTP/1\.1" 200 OK', stdout=True)


def test_no_access_log_silences_the_python_path_too(tmp_path):
    config = write_config(tmp_path, "json")
    with Server("log_app:app", "--log-config", str(config), "--no-access-log") as s:
        get(s, "/log?msg=m4")
        s.wait_for_log(r"uvicorn-said m4")
        time.sleep(0.3)
        assert s.stdout_text() == ""


GUNICORN_ATOMS = (
    "%(h)s|%(l)s|%(u)s|%(t)s|%(r)s|%(m)s|%(U)s|%(q)s|%(H)s|%(s)s|%(b)s|%(B)s|%(f)s|%(a)s"
    "|%(T)s|%(M)s|%(D)s|%(L)s|%(p)s|%({X-Custom}i)s|%({x-out}o)s|%({FERRO_LOG_ENV}e)s|%%"
)


def test_access_log_format_atoms_field_by_field():
    with Server(
        "log_app:app", "--access-log-format", GUNICORN_ATOMS, env={"FERRO_LOG_ENV": "env-v"}
    ) as s:
        headers = {
            "authorization": "Basic " + base64.b64encode(b"alice:secret").decode(),
            "referer": "http://ref.example/p",
            "user-agent": "agent/1.0",
            "x-custom": 'custom "v"',
        }
        before = datetime.datetime.now().astimezone()
        assert get(s, "/fmt/path?a=1&status=201", headers=headers).status_code == 201
        line = s.wait_for_log(r"(?m)^127\.0\.0\.1\|.*$", stdout=True)[0]
        workers = s.worker_pids()
    f = line.split("|")
    assert len(f) == 23, f
    assert f[:3] == ["127.0.0.1", "-", "alice"]
    stamp = datetime.datetime.strptime(f[3], "[%d/%b/%Y:%H:%M:%S %z]")
    assert abs((stamp - before).total_seconds()) < 5
    assert f[4] == "GET /fmt/path?a=1&status=201 HTTP/1.1"
    assert f[5:10] == ["GET", "/fmt/path", "a=1&status=201", "HTTP/1.1", "201"]
    assert f[10:12] == ["5", "5"]  # b and B: the body's 5 bytes
    assert f[12:14] == ["http://ref.example/p", "agent/1.0"]
    seconds, millis, micros, decimal = int(f[14]), int(f[15]), int(f[16]), float(f[17])
    assert seconds == 0 and 0 <= millis < 2000 and 0 <= micros < 2_000_000
    assert abs(decimal - micros / 1e6) < 1e-5
    assert int(f[18].strip("<>")) in workers
    assert f[19] == 'custom \\"v\\"'  # quotes escaped: they can't close a quoted field
    assert f[20:] == ["out-value", "env-v", "%"]


def test_access_log_format_dashes_what_is_missing():
    with Server("log_app:app", "--access-log-format", "%(u)s %(f)s %(a)s %({x-no}i)s %(b)s") as s:
        with s.connect() as sock:
            raw_exchange(sock, b"HEAD /x HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
        s.wait_for_log(r"(?m)^- - - - -$", stdout=True)


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]


def test_json_access_log_is_typed_and_survives_hostile_input():
    """Every line is one JSON object that json.loads parses back to exactly what the
    client sent: quotes, backslashes, braces, tabs and invalid UTF-8 in headers, quotes
    and backslashes in the path can't close a string or add a field."""
    with Server("log_app:app", "--access-log-json") as s:
        target = b'/j/a"b\\c/%22{}?q="v",&x=\\'
        user_agent = b'ua"},"status":1,\xff\t"x\\'
        request = (
            b"GET " + target + b" HTTP/1.1\r\nHost: h\r\nUser-Agent: " + user_agent + b"\r\n"
            b'X-Request-Id: id-"1"\r\nReferer: r\\"\r\nConnection: close\r\n\r\n'
        )
        with s.connect() as sock:
            reply = raw_exchange(sock, request)
        assert reply.startswith(b"HTTP/1.1 200 "), reply
        with s.connect() as sock:
            raw_exchange(sock, b"GET /plain HTTP/1.0\r\n\r\n")
        assert get(s, "/done?status=404").status_code == 404
        s.wait_for_log(r'"/done"', stdout=True)
        lines = json_lines(s.stdout_text())
    assert len(lines) == 3, lines
    hostile, plain, done = lines
    assert hostile["path"] == '/j/a"b\\c/%22{}'
    assert hostile["query"] == 'q="v",&x=\\'
    assert hostile["user_agent"] == 'ua"},"status":1,\\xff\t"x\\'
    assert hostile["request_id"] == 'id-"1"'
    assert hostile["referer"] == 'r\\"'
    assert hostile["status"] == 200 and hostile["bytes"] == 5
    assert hostile["method"] == "GET" and hostile["protocol"] == "HTTP/1.1"
    assert re.fullmatch(r"127\.0\.0\.1:\d+", hostile["client"])
    assert isinstance(hostile["duration"], float) and 0 <= hostile["duration"] < 5
    stamp = datetime.datetime.fromisoformat(hostile["time"].replace("Z", "+00:00"))
    now = datetime.datetime.now(datetime.timezone.utc)
    assert abs((now - stamp).total_seconds()) < 10
    assert plain["protocol"] == "HTTP/1.0" and plain["user_agent"] is None
    assert plain["referer"] is None and "request_id" not in plain
    assert (plain["path"], plain["query"]) == ("/plain", "")
    assert done["status"] == 404 and done["user_agent"].startswith("python-httpx/")


def test_json_access_log_over_http2():
    with Server("log_app:app", "--access-log-json") as s:
        with httpx.Client(http1=False, http2=True, timeout=5) as client:
            client.get(f"{s.url}/h2?x=1", headers={"x-request-id": "r-2"})
        s.wait_for_log(r'"/h2"', stdout=True)
        (line,) = json_lines(s.stdout_text())
    assert line["protocol"] == "HTTP/2" and line["query"] == "x=1"
    assert line["request_id"] == "r-2" and line["bytes"] == 5


def test_access_log_exclude_drops_exact_paths_only():
    with Server(
        "log_app:app", "--access-log-exclude", "/health", "--access-log-exclude", "/ready"
    ) as s:
        for path in ("/health", "/health?probe=1", "/ready", "/healthz", "/health/x", "/sentinel"):
            assert get(s, path).status_code == 200
        s.wait_for_log(r"GET /sentinel HTTP", stdout=True)
        out = s.stdout_text()
    assert "GET /healthz HTTP" in out and "GET /health/x HTTP" in out
    assert "/health " not in out and "/health?" not in out and "/ready" not in out


def test_access_log_exclude_with_json_and_format():
    for extra in (["--access-log-json"], ["--access-log-format", "%(U)s"]):
        with Server("log_app:app", "--access-log-exclude", "/health", *extra) as s:
            get(s, "/health")
            get(s, "/kept")
            s.wait_for_log(r"/kept", stdout=True)
            assert "/health" not in s.stdout_text()


def test_use_colors_on_and_off():
    with Server("log_app:app", "--use-colors") as s:
        get(s, "/c")
        s.wait_for_log(
            re.escape('"\x1b[1mGET /c HTTP/1.1\x1b[0m" \x1b[32m200 OK\x1b[0m'), stdout=True
        )
        assert "\x1b[32mINFO\x1b[0m:     Started master process" in s.stderr_text()
        assert "\x1b[32mINFO\x1b[0m:" in s.stdout_text()
    for args in (["--no-use-colors"], []):  # [] : auto, and the pipes aren't terminals
        with Server("log_app:app", *args) as s:
            get(s, "/log?msg=c")
            s.wait_for_log(r"GET /log\?msg=c HTTP", stdout=True)
            s.wait_for_log(r"uvicorn-said c")
            assert "\x1b[" not in s.stdout_text() + s.stderr_text()


def test_use_colors_on_the_python_access_path():
    with Server("log_app:filtered_app", "--use-colors") as s:
        get(s, "/c2")
        s.wait_for_log(
            re.escape('"\x1b[1mGET /c2 HTTP/1.1\x1b[0m" \x1b[32m200 OK\x1b[0m'), stdout=True
        )


BAD_CONFIGS = {
    "missing.json": None,
    "broken.json": "{not json",
    "broken.yaml": "a: [unclosed",
    "scalar.yaml": "just a string\n",
    "unknown_class.json": json.dumps(
        {"version": 1, "handlers": {"h": {"class": "no.such.Handler"}}}
    ),
    "no_version.json": json.dumps({"handlers": {}}),
    "garbage.ini": "this is not an ini file\n",
    "empty.ini": "",
}


if sys.version_info >= (3, 11):
    BAD_CONFIGS["broken.toml"] = "version = [1\n"


@pytest.mark.parametrize("name", sorted(BAD_CONFIGS))
def test_bad_log_config_is_one_line_and_exit_2(tmp_path, name):
    path = tmp_path / name
    if BAD_CONFIGS[name] is not None:
        path.write_text(BAD_CONFIGS[name])
    result = run_to_exit("log_app:app", "--log-config", str(path))
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: --log-config {path}: "), lines
    assert "Booting worker" not in result.stderr + result.stdout


@pytest.mark.parametrize(
    "fmt, problem",
    [
        ("%(zz)s", "unknown atom %(zz)s"),
        ("100%", "lone %"),
        ("%({x}z)s", "expected"),
        ("%(s)d", "%(s) must be followed by s"),
    ],
)
def test_bad_access_log_format_is_one_line_and_exit_2(fmt, problem):
    result = run_to_exit("log_app:app", "--access-log-format", fmt)
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --access-log-format: "), lines
    assert problem in lines[0]


def test_json_and_format_together_are_refused():
    result = run_to_exit("log_app:app", "--access-log-json", "--access-log-format", "%(h)s")
    assert result.returncode == 2
    assert "cannot be used with" in result.stderr


def test_python_path_wins_over_the_rust_styles_and_says_so():
    with Server("log_app:filtered_app", "--access-log-json") as s:
        s.wait_for_log(r"(?m)^WARNING:  The access logger was changed by the app .*python")
        get(s, "/health")
        get(s, "/p")
        s.wait_for_log(r'(?m)^INFO:     127\.0\.0\.1:\d+ - "GET /p HTTP/1\.1" 200 OK$', stdout=True)
        assert "/health" not in s.stdout_text()


def test_keywords_and_coloured_levels_through_the_python_api(capfd):
    """ferrocorn.testing.serve (the Python API) takes the new options as keywords; with
    colours on, the parent still reads the levels to filter what it forwards."""
    from ferrocorn.testing import serve

    with serve(
        "log_app:app",
        app_dir=str(APPS_DIR),
        use_colors=True,
        log_level="warning",
        access_log_exclude=["/health"],
        access_log_format="%(U)s %(s)s",
    ) as url:
        assert httpx.get(f"{url}/log?msg=api", timeout=5).status_code == 200
        assert httpx.get(f"{url}/health", timeout=5).status_code == 200
        time.sleep(0.3)
    err = capfd.readouterr().err
    # Forwarded: the coloured warning; filtered out: every coloured info line.
    assert "\x1b[33mWARNING\x1b[0m:  ferrocorn-said api" in err, err
    assert "\x1b[32mINFO" not in err


def test_a_directory_as_log_config_is_refused(tmp_path):
    path = tmp_path / "dir.json"
    path.mkdir()
    result = run_to_exit("log_app:app", "--log-config", str(path))
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: --log-config {path}: can't read it: Is a directory"


def test_yaml_without_pyyaml_says_what_to_install(tmp_path):
    config = write_config(tmp_path, "yaml")
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "yaml.py").write_text("raise ImportError('PyYAML is not installed here')\n")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "ferrocorn",
            "log_app:app",
            "--port",
            "0",
            "--log-config",
            str(config),
        ],
        cwd=APPS_DIR,
        env={**os.environ, "PYTHONPATH": str(blocker)},
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"error: --log-config {config}: YAML log configs need PyYAML:"
        " pip install pyyaml (or use .json or .ini)"
    )


def test_access_log_format_escapes_hostile_input():
    """Quotes and backslashes get a backslash; tabs, C1 controls (U+0085 is a newline to
    some log viewers) and bytes that aren't UTF-8 become \\xNN: one line, fields intact."""
    with Server("log_app:app", "--access-log-format", '"%(r)s" "%(a)s" %(s)s') as s:
        with s.connect() as sock:
            reply = raw_exchange(
                sock,
                b'GET /q"x\\y?z="1" HTTP/1.1\r\nHost: h\r\n'
                b'User-Agent: a\tb\xc2\x85"c\xff\\\r\nConnection: close\r\n\r\n',
            )
        assert reply.startswith(b"HTTP/1.1 200 "), reply
        s.wait_for_log(r"200$", stdout=True)
        assert s.stdout_text() == (
            '"GET /q\\"x\\\\y?z=\\"1\\" HTTP/1.1" "a\\x09b\\xc2\\x85\\"c\\xff\\\\" 200\n'
        )


def test_python_records_have_uvicorns_full_path():
    """record.args[2] is uvicorn's get_path_with_query_string: quote(root_path + path)
    and the query as sent, so filters see what they would see under uvicorn."""
    with Server("log_app:filtered_app", "--root-path", "/api") as s:
        with s.connect() as sock:
            raw_exchange(
                sock, b'GET /a:b/%7Ec"?x="1" HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n'
            )
        s.wait_for_log(
            r'(?m)^INFO:     127\.0\.0\.1:\d+ - "GET /api/a%3Ab/~c%22\?x="1" HTTP/1\.1" 200 OK$',
            stdout=True,
        )


def test_the_master_checks_the_config_without_importing_app_code(tmp_path):
    """A config naming the app's own filter class is checked in a fresh interpreter:
    the module is imported by the checker and the worker, never by the master."""
    marker = tmp_path / "imported-by"
    config = {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"mark": {"()": "log_marker.Marker"}},
        "loggers": {"uvicorn.access": {"filters": ["mark"]}},
    }
    path = tmp_path / "marker.json"
    path.write_text(json.dumps(config))
    with Server(
        "log_app:app", "--log-config", str(path), env={"FERRO_IMPORT_MARKER": str(marker)}
    ) as s:
        importers = {int(pid) for pid in marker.read_text().split()}
        workers = s.worker_pids()
        assert s.pid not in importers
        assert workers <= importers and len(importers) == len(workers) + 1


def test_python_default_handlers_follow_log_files_and_usr1(tmp_path):
    """The default handlers of the uvicorn/ferrocorn loggers write through the Rust
    writer: into --error-logfile/--access-logfile, and into the new files after SIGUSR1
    (logrotate), the Python access path included."""
    error_log, access_log = tmp_path / "error.log", tmp_path / "access.log"
    args = ("--error-logfile", str(error_log), "--access-logfile", str(access_log))
    with Server("log_app:filtered_app", *args, error_log=error_log) as s:
        get(s, "/log?msg=before")
        s.wait_for_log(r"uvicorn-said before")
        deadline = time.monotonic() + 5
        while "msg=before" not in access_log.read_text():
            assert time.monotonic() < deadline, "no access line before the rotation"
            time.sleep(0.05)
        error_log.rename(tmp_path / "error.log.1")
        access_log.rename(tmp_path / "access.log.1")
        s.signal(signal.SIGUSR1)
        deadline = time.monotonic() + 5
        while not (error_log.exists() and access_log.exists()):
            assert time.monotonic() < deadline, "log files were not reopened"
            time.sleep(0.05)
        time.sleep(0.2)  # the workers reopen theirs on the control channel
        get(s, "/log?msg=after")
        get(s, "/health")
        s.wait_for_log(r"(?m)^INFO:     uvicorn-said after$")
        assert re.search(
            r'"GET /log\?msg=before HTTP/1\.1" 200 OK', (tmp_path / "access.log.1").read_text()
        )
        deadline = time.monotonic() + 5
        while "msg=after" not in access_log.read_text():
            assert time.monotonic() < deadline, access_log.read_text()
            time.sleep(0.05)
        assert "/health" not in access_log.read_text()
        assert "uvicorn-said after" not in (tmp_path / "error.log.1").read_text()


@pytest.mark.parametrize("how", ["handlers", "level", "disabled"])
def test_apps_that_silence_uvicorn_access_get_no_access_log(how):
    """`.handlers = []`, `.setLevel(WARNING)`, `.disabled = True` on uvicorn.access turn
    uvicorn's access log off; they turn ferrocorn's off too."""
    with Server("log_app:silenced_app", env={"LOG_APP_SILENCE": how}) as s:
        get(s, "/log?msg=quiet")
        s.wait_for_log(r"uvicorn-said quiet")
        time.sleep(0.3)
        assert s.stdout_text() == ""


def test_a_log_config_without_access_loggers_means_no_access_log(tmp_path):
    """As under uvicorn: a --log-config that doesn't set up the access logger (and no
    root handler) leaves access records nowhere; --access-log-json, asked for
    explicitly, still writes its lines."""
    config = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"format": ERR_FORMAT}},
        "handlers": {"err": {"class": "logging.StreamHandler", "formatter": "plain"}},
        "loggers": {"uvicorn.error": {"handlers": ["err"], "level": "INFO", "propagate": False}},
    }
    path = tmp_path / "no-access.json"
    path.write_text(json.dumps(config))
    with Server("log_app:app", "--log-config", str(path)) as s:
        get(s, "/log?msg=a")
        s.wait_for_log(r"CFG\|uvicorn\.error\|INFO\|uvicorn-said a")
        time.sleep(0.3)
        assert s.stdout_text() == ""
        assert "GET /log" not in s.stderr_text()
    with Server("log_app:app", "--log-config", str(path), "--access-log-json") as s:
        get(s, "/log?msg=b")
        s.wait_for_log(r'"path":"/log"', stdout=True)


def test_access_records_propagate_to_a_configured_parent():
    """uvicorn.access propagates unless told not to: a config with a handler on
    `uvicorn` only gets the access records there, as under uvicorn."""
    config = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"format": ERR_FORMAT}},
        "handlers": {"err": {"class": "logging.StreamHandler", "formatter": "plain"}},
        "loggers": {"uvicorn": {"handlers": ["err"], "level": "INFO", "propagate": False}},
    }
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "parent.json")
        with open(path, "w") as f:
            json.dump(config, f)
        with Server("log_app:app", "--log-config", path) as s:
            get(s, "/p")
            s.wait_for_log(
                r'(?m)^CFG\|uvicorn\.access\|INFO\|127\.0\.0\.1:\d+ - "GET /p HTTP/1\.1" 200$'
            )
            assert s.stdout_text() == ""


def test_log_config_as_a_dict_through_the_python_api(capfd):
    """uvicorn.run(app, log_config={...}) takes a dictConfig dict; so do ferrocorn's
    run(), Config and testing.serve (it reaches the workers as a JSON file)."""
    from ferrocorn.testing import serve

    config = {k: v for k, v in DICT_CONFIG.items() if k != "filters"}
    config["handlers"] = {
        "err": DICT_CONFIG["handlers"]["err"],
        "out": {k: v for k, v in DICT_CONFIG["handlers"]["out"].items() if k != "filters"},
    }
    with serve("log_app:app", app_dir=str(APPS_DIR), log_config=config) as url:
        assert httpx.get(f"{url}/log?msg=dict", timeout=5).status_code == 200
        time.sleep(0.3)
    assert "CFG|uvicorn.error|INFO|uvicorn-said dict" in capfd.readouterr().err
    with pytest.raises(TypeError, match="log_config as a dict must be JSON-serialisable"):
        ferrocorn.Config("log_app:app", log_config={"version": 1, "x": object()})


def test_json_and_format_over_a_unix_socket(tmp_path):
    """No client address on a Unix socket: JSON says null, %(h)s says "-"."""
    path = str(tmp_path / "log.sock")
    for args, expect in (
        (["--access-log-json"], lambda line: json.loads(line)["client"] is None),
        (["--access-log-format", "%(h)s %(U)s"], lambda line: line == "- /u"),
    ):
        with Server("log_app:app", "--uds", path, *args) as s:
            transport = httpx.HTTPTransport(uds=path)
            with httpx.Client(transport=transport, base_url="http://localhost") as client:
                assert client.get("/u").status_code == 200
            s.wait_for_log(r"/u", stdout=True)
            (line,) = s.stdout_text().splitlines()
            assert expect(line), line
