"""The command line as the master reads it (src/cli/): FERROCORN_* variables and the
--config file under the command line, --env-file (read again on HUP), --header, gunicorn's
--bind forms and short names, the rest of uvicorn 0.54's options, and one clear line with
exit code 2 for bad input. Every server is a real ferrocorn process."""

import importlib.util
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time

import httpx
import pytest
import trustme
from ferrocorn import _options, testing

from tests.server import APPS_DIR, Server, run_to_exit

APP = "cli_app:app"
# FERROCORN_* variables of the parent environment would change what these tests see
# (an empty one counts as unset).
CLEAN = {k: "" for k in os.environ if k.startswith("FERROCORN_")}


def report(server: Server, query: str = "", **kw) -> dict:
    response = httpx.get(f"{server.url}/?{query}", timeout=5, **kw)
    assert response.status_code == 200, response.text
    return response.json()


def serve(*args: str, env: dict | None = None, **kw) -> Server:
    return Server(APP, *args, env={**CLEAN, **(env or {})}, **kw)


# ------------------------------------------------------------ environment variables
def test_every_option_names_its_variable_in_help():
    out = subprocess.run(
        [sys.executable, "-m", "ferrocorn", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for name in ("PORT", "ROOT_PATH", "ACCESS_LOG", "NO_ACCESS_LOG", "HEADER", "ENV_FILE", "APP"):
        assert f"[env: FERROCORN_{name}]" in out, name


def test_variables_set_options():
    env = {"FERROCORN_ROOT_PATH": "/api", "FERROCORN_HEADER": "X-One: 1\nX-Two: 2"}
    with serve(env=env) as server:
        response = httpx.get(server.url + "/", timeout=5)
        assert response.json()["root_path"] == "/api"
        assert (response.headers["x-one"], response.headers["x-two"]) == ("1", "2")


@pytest.mark.parametrize(
    "env, args, logged",
    [
        ({}, [], True),
        ({"FERROCORN_ACCESS_LOG": "false"}, [], False),
        ({"FERROCORN_ACCESS_LOG": "0"}, [], False),
        ({"FERROCORN_NO_ACCESS_LOG": "true"}, [], False),
        ({"FERROCORN_NO_ACCESS_LOG": "no"}, [], True),
        # The command line wins over the environment.
        ({"FERROCORN_ACCESS_LOG": "false"}, ["--access-log"], True),
        ({"FERROCORN_ACCESS_LOG": "true"}, ["--no-access-log"], False),
    ],
)
def test_switches_take_a_boolean_under_either_name(env, args, logged):
    with serve(*args, env=env) as server:
        httpx.get(server.url + "/logged-path", timeout=5)
        time.sleep(0.3)
        assert ("/logged-path" in server.stdout_text()) is logged


def test_the_command_line_wins_over_the_environment_which_wins_over_the_file(tmp_path):
    config = tmp_path / "ferrocorn.toml"
    config.write_text('root_path = "/file"\nheader = ["X-From: file"]\n')
    layers = [
        ({}, [], "/file"),
        ({"FERROCORN_ROOT_PATH": "/env"}, [], "/env"),
        ({"FERROCORN_ROOT_PATH": "/env"}, ["--root-path", "/cli"], "/cli"),
        ({"FERROCORN_CONFIG": str(config)}, [], "/file"),
    ]
    for env, args, expected in layers:
        config_args = [] if "FERROCORN_CONFIG" in env else ["--config", str(config)]
        with serve(*config_args, *args, env=env) as server:
            response = httpx.get(server.url + "/", timeout=5)
            assert response.json()["root_path"] == expected, (env, args)
            assert response.headers["x-from"] == "file"


def test_config_file_holds_app_and_any_option_by_either_spelling(tmp_path):
    config = tmp_path / "ferrocorn.toml"
    config.write_text(
        'app = "cli_app:app"\nport = 0\n"access-log" = false\nkeep_alive = 7\n'
        'workers = 2\nheader = "X-Single: yes"\n'
    )
    cmd = [sys.executable, "-m", "ferrocorn", "-c", str(config)]
    with Server("", cmd=cmd, env=CLEAN) as server:
        response = httpx.get(server.url + "/quiet", timeout=5)
        assert response.headers["x-single"] == "yes"
        assert len(server.wait_for_workers(2)) == 2
        time.sleep(0.3)
        assert "/quiet" not in server.stdout_text()


def test_web_concurrency_still_counts_and_beats_the_file(tmp_path):
    config = tmp_path / "ferrocorn.toml"
    config.write_text("workers = 1\n")
    with serve("--config", str(config), env={"WEB_CONCURRENCY": "2"}) as server:
        assert len(server.wait_for_workers(2)) == 2
    env = {"WEB_CONCURRENCY": "2", "FERROCORN_WORKERS": "3"}
    with serve("--config", str(config), env=env) as server:
        assert len(server.wait_for_workers(3)) == 3
    # As uvicorn, which loads the env file before it reads WEB_CONCURRENCY.
    env_file = tmp_path / ".env"
    env_file.write_text("WEB_CONCURRENCY=2\n")
    with serve("--config", str(config), "--env-file", str(env_file)) as server:
        assert len(server.wait_for_workers(2)) == 2
    with serve("--env-file", str(env_file), env={"WEB_CONCURRENCY": "3"}) as server:
        assert len(server.wait_for_workers(3)) == 3


# ------------------------------------------------------------------ bad input
def bad(tmp_path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize(
    "args, env, message",
    [
        (["--config", "{tmp}/nope.toml"], {}, "--config {tmp}/nope.toml: No such file"),
        (["--config", "@bogus.toml:bogus = 1"], {}, "unknown option 'bogus'"),
        (["--config", "@broken.toml:port = "], {}, "invalid TOML"),
        (["--config", "@list.toml:port = [1]"], {}, "port: expects a single value"),
        (["--config", "@inner.toml:config = 'x'"], {}, "'config' cannot be set"),
        (["--config", "@type.toml:port = 'abc'"], {}, "port in {tmp}/type.toml: invalid value"),
        (["-c", "gunicorn.conf.py"], {}, "a Python config file (gunicorn's or hypercorn's)"),
        ([], {"FERROCORN_PORT": "abc"}, "FERROCORN_PORT: invalid value 'abc'"),
        ([], {"FERROCORN_ACCESS_LOG": "maybe"}, "FERROCORN_ACCESS_LOG: expects true or false"),
        ([], {"FERROCORN_ENV": "production"}, 'FERROCORN_ENV: --env "production": expected KEY'),
        (["-c", "@b.toml:bind = ['x:1']"], {}, 'bind in {tmp}/b.toml: --bind "x:1": the host'),
        (
            [],
            {"FERROCORN_ACCESS_LOG": "1", "FERROCORN_NO_ACCESS_LOG": "1"},
            "FERROCORN_ACCESS_LOG and FERROCORN_NO_ACCESS_LOG are both set",
        ),
        (["--env-file", "{tmp}/missing.env"], {}, "--env-file {tmp}/missing.env: No such file"),
        (["--env-file", "@bad.env:A=1\nB='open\n"], {}, "line 2: quote ' opened on line 2"),
        (["--env", "NOEQUALS"], {}, '--env "NOEQUALS": expected KEY=VALUE'),
        (["--header", "no-colon"], {}, '--header "no-colon": expected Name:Value'),
        (["--header", "bad name:x"], {}, "not a valid header name"),
        (["--bind", "::1:80"], {}, '--bind "::1:80": write an IPv6 address in brackets'),
        (["--bind", "example.com:80"], {}, "the host must be an IP address"),
        (["--bind", "127.0.0.1:1", "--host", "::1"], {}, "--bind replaces --host"),
        (["--bind", "127.0.0.1:1", "--uds", "/tmp/x"], {}, "cannot be used with"),
        (["-k", "gevent"], {}, "--worker-class gevent: ferrocorn has no green-thread workers"),
        (["-k", "sync", "--interface", "asgi3"], {}, "--worker-class sync contradicts"),
        (["-k", "nonsense.Worker"], {}, "--worker-class nonsense.Worker: unknown worker class"),
        (["-k", "trio"], {}, "--worker-class trio: ferrocorn runs apps on asyncio"),
        (["-k", "uvloop", "--loop", "asyncio"], {}, "--worker-class uvloop contradicts --loop"),
        (["--daemon"], {}, "--daemon: ferrocorn does not daemonize"),
        (["--user", "nobody"], {}, "--user: ferrocorn does not switch users"),
        (["--group", "nogroup"], {}, "--group: ferrocorn does not switch users"),
        (["--chdir", "{tmp}/nowhere"], {}, "--chdir {tmp}/nowhere:"),
        (["--ssl-version", "3"], {}, "--ssl-version 3 (TLS 1.0): ferrocorn's TLS (rustls)"),
        (["--ssl-version", "4"], {}, "--ssl-version 4 (TLS 1.1)"),
        (["--ssl-version", "16"], {}, "PROTOCOL_TLS_CLIENT"),
        (["--ssl-version", "99"], {}, "--ssl-version 99: not one of"),
        (["--ssl-version", "5", "--ssl-min-version", "1.3"], {}, "contradicts"),
        (["--ssl-ciphers", "AES128-SHA:DES-CBC3-SHA"], {}, "selects none of the TLS 1.2"),
        (["--http", "h11", "--http2"], {}, "--http2 asks for HTTP/2"),
        (["--loop", "nonsense"], {}, "invalid value 'nonsense' for '--loop"),
        (["--timeout-worker-healthcheck", "0"], {}, "must be above 0"),
        (["--prot", "1"], {}, "unexpected argument '--prot' found (a similar argument exists"),
        (["--port", "x"], {}, "invalid value 'x' for '--port <PORT>'"),
        (["--", "--no-app"], {}, "unexpected argument '--no-app'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2_before_any_worker(tmp_path, args, env, message):
    resolved = []
    for arg in args:
        arg = arg.replace("{tmp}", str(tmp_path))
        if arg.startswith("@"):
            name, _, text = arg[1:].partition(":")
            arg = bad(tmp_path, name, text)
        resolved.append(arg)
    result = subprocess.run(
        [sys.executable, "-m", "ferrocorn", APP, *resolved],
        cwd=APPS_DIR,
        capture_output=True,
        text=True,
        timeout=20,
        env={**os.environ, **CLEAN, **env},
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    expected = message.replace("{tmp}", str(tmp_path))
    assert expected in lines[0], result.stderr
    assert len(lines) == 1, result.stderr
    assert "Booting worker" not in result.stderr
    assert result.stdout == ""


def test_no_app_anywhere_is_one_line_too():
    result = subprocess.run(
        [sys.executable, "-m", "ferrocorn", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=20,
        env={**os.environ, **CLEAN},
    )
    assert result.returncode == 2
    assert result.stderr == "error: the following required arguments were not provided: <APP>\n"


# ------------------------------------------------------------------ --env-file
def test_env_file_reaches_workers_and_is_read_again_on_hup(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text('# settings\nexport A=1\nB="b ${A}"\nKEPT=from-file\n')
    env = {"KEPT": "from-environment"}
    with serve("--env-file", str(env_file), "--env", "C=from-flag", env=env) as server:
        got = report(server, "env=A&env=B&env=C&env=KEPT&env=GONE")["env"]
        assert got == {
            "A": "1",
            "B": "b 1",
            "C": "from-flag",
            "KEPT": "from-environment",
            "GONE": None,
        }
        assert "FERROCORN_" not in "".join(got)
        old = server.worker_pids()
        env_file.write_text("A=2\nGONE=here\n")
        server.signal(signal.SIGHUP)
        new = server.wait_for_workers(1, exclude=old)
        server.wait_for_log("Reloaded environment from")
        got = report(server, "env=A&env=B&env=GONE")["env"]
        assert got == {"A": "2", "B": None, "GONE": "here"}
        # A file that no longer parses: one error, no restart, the workers keep serving.
        env_file.write_text("A='unclosed\n")
        server.signal(signal.SIGHUP)
        server.wait_for_log("not restarting")
        time.sleep(0.5)
        assert server.worker_pids() == new
        assert report(server, "env=A")["env"] == {"A": "2"}


# ------------------------------------------------------------------ --header
def test_header_on_http1_http2_and_next_to_the_apps_own():
    args = ["--header", "X-Frame-Options: DENY", "--header", "x-app:from-server"]
    with serve(*args) as server:
        response = httpx.get(server.url + "/?x_app=from-app", timeout=5)
        assert response.headers["x-frame-options"] == "DENY"
        # As uvicorn: the server's default comes first, the app's header is sent too.
        assert response.headers.get_list("x-app") == ["from-server", "from-app"]
        assert response.headers["server"] == "ferrocorn"
        with httpx.Client(http1=False, http2=True, timeout=5) as h2:
            response = h2.get(server.url + "/")
            assert response.http_version == "HTTP/2"
            assert response.headers["x-frame-options"] == "DENY"


def test_header_on_the_websocket_handshake():
    from websockets.sync.client import connect

    with Server("ws_echo:app", "--header", "X-Frame-Options: DENY", env=CLEAN) as server:
        with connect(f"ws://127.0.0.1:{server.port}/") as ws:
            assert ws.response.headers["x-frame-options"] == "DENY"
            ws.send("hi")
            assert ws.recv(timeout=5) == "hi"


def test_a_server_header_replaces_ferrocorns():
    with serve("--header", "Server: edge") as server:
        response = httpx.get(server.url + "/", timeout=5)
        assert response.headers.get_list("server") == ["edge"]


# ------------------------------------------------------------------ --bind
def test_bind_several_listeners_every_worker_serves(tmp_path):
    uds = tmp_path / "s.sock"
    cmd = [sys.executable, "-m", "ferrocorn", APP, "-w", "2"]
    cmd += ["-b", "127.0.0.1:0", "-b", "[::1]:0", "--bind", f"unix:{uds}"]
    with Server(APP, cmd=cmd, env=CLEAN) as server:
        log = server.stderr_text()
        urls = re.findall(r"running on (\S+)", log)
        assert len(urls) == 3, log
        assert urls[0].startswith("http://127.0.0.1:") and urls[1].startswith("http://[::1]:")
        for url in urls[:2]:
            assert httpx.get(url + "/", timeout=5).status_code == 200
        with httpx.Client(transport=httpx.HTTPTransport(uds=str(uds)), timeout=5) as client:
            assert client.get("http://localhost/").status_code == 200


def test_bind_fd_serves_an_inherited_socket():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    fd = listener.fileno()
    proc = subprocess.Popen(
        [sys.executable, "-m", "ferrocorn", APP, "--bind", f"fd://{fd}"],
        cwd=APPS_DIR,
        pass_fds=[fd],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env={**os.environ, **CLEAN},
    )
    listener.close()
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                assert httpx.get(f"http://127.0.0.1:{port}/", timeout=2).status_code == 200
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.2)
    finally:
        proc.terminate()
        proc.wait(15)


# ------------------------------------------------------------------ gunicorn's names
def test_gunicorn_short_names_and_aliases(tmp_path):
    pid = tmp_path / "master.pid"
    here = tmp_path / "elsewhere"
    here.mkdir()
    args = ["-w", "2", "-t", "20", "-p", str(pid), "--keep-alive", "1", "--chdir", str(here)]
    args += ["--app-dir", str(APPS_DIR)]  # the app is no longer in the working directory
    args += ["-k", "uvicorn.workers.UvicornWorker", "--preload", "--access-logfile", "-"]
    with serve(*args) as server:
        assert len(server.wait_for_workers(2)) == 2
        assert int(pid.read_text()) == server.pid
        data = report(server)
        assert data["cwd"] == str(here)
        httpx.get(server.url + "/to-stdout", timeout=5)
        server.wait_for_log("/to-stdout", stdout=True)
        assert not (here / "-").exists() and not (APPS_DIR / "-").exists()
        # --keep-alive 1: an idle connection is closed after a second.
        with server.connect() as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            sock.settimeout(5)
            start = time.monotonic()
            while sock.recv(65536):
                pass
            assert time.monotonic() - start < 4
        log = server.stderr_text()
        assert log.count("--worker-class uvicorn.workers.UvicornWorker:") == 1
        assert log.count("--preload: the master never imports the app") == 1


# ------------------------------------------------------------------ uvicorn's options
def test_implementation_names_are_noted_once_at_startup():
    args = ["-w", "2", "--http", "httptools", "--ws", "wsproto", "--loop", "asyncio"]
    with serve(*args) as server:
        assert report(server)["http_version"] == "1.1"
        log = server.stderr_text()
        assert log.count("--http httptools: ferrocorn parses HTTP/1.1 in Rust") == 1
        assert log.count("--ws wsproto: ferrocorn's WebSocket protocol is implemented in Rust") == 1
        # HTTP/1.1 only, as uvicorn with httptools.
        with httpx.Client(http1=False, http2=True, timeout=5) as h2:
            with pytest.raises(httpx.HTTPError):
                h2.get(server.url + "/")
    with serve("--http", "zttp", "--http2") as server:
        with httpx.Client(http1=False, http2=True, timeout=5) as h2:
            assert h2.get(server.url + "/").http_version == "HTTP/2"
        assert server.stderr_text().count("--http2: ferrocorn serves HTTP/2") == 1


@pytest.mark.parametrize(
    "loop, expected",
    [
        ("none", "_UnixSelectorEventLoop"),
        ("asyncio", "_UnixSelectorEventLoop"),
        ("cli_app:marked_loop", "MarkedLoop"),
        ("uvloop", "Loop"),
    ],
)
def test_loop_values_including_a_custom_factory(loop, expected):
    with serve("--loop", loop) as server:
        assert report(server)["loop"] == expected


@pytest.mark.skipif(
    importlib.util.find_spec("zuvloop") is not None, reason="zuvloop is installed here"
)
def test_a_loop_that_is_not_installed_fails_the_boot_with_its_name():
    result = run_to_exit(APP, "--loop", "zuvloop")
    assert result.returncode == 3, result.stderr
    assert "--loop zuvloop was given but zuvloop is not installed" in result.stderr


def test_a_custom_loop_that_cannot_be_imported_fails_the_boot():
    result = run_to_exit(APP, "--loop", "cli_app:no_such_loop")
    assert result.returncode == 3, result.stderr
    assert "Error loading custom loop setup function" in result.stderr


@pytest.mark.parametrize("impl", ["task", "create-task", "runner"])
def test_reset_contextvars_hides_context_set_at_import(impl):
    with serve("--task-impl", impl) as server:
        assert report(server)["marker"] == "from-import"
    with serve("--task-impl", impl, "--reset-contextvars") as server:
        assert report(server)["marker"] == "unset"


def test_h11_max_incomplete_event_size_caps_a_partial_head():
    with serve("--h11-max-incomplete-event-size", "200") as server:
        with server.connect() as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Long: " + b"a" * 300)
            sock.settimeout(5)
            assert sock.recv(100).startswith(b"HTTP/1.1 431 ")
        # A head under it is served.
        assert report(server)["http_version"] == "1.1"


def test_timeout_worker_healthcheck_aborts_a_restart_whose_worker_is_not_ready(tmp_path):
    slow = tmp_path / "slow"
    env = {"CLI_SLOW_START_FILE": str(slow)}
    with serve("--timeout-worker-healthcheck", "1", env=env) as server:
        old = server.worker_pids()
        slow.write_text("")
        server.signal(signal.SIGHUP)
        server.wait_for_log("not ready within --timeout-worker-healthcheck")
        server.wait_for_log("the running workers keep serving")
        assert server.wait_for_workers(1) == old
        assert report(server)["pid"] in old


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.private_key_and_cert_chain_pem.write_to_path(str(d / "cert.pem"))
    cert.private_key_pem.write_to_path(str(d / "key.pem"))
    ca.cert_pem.write_to_path(str(d / "ca.pem"))
    return d


def handshake(server: Server, pki, **settings) -> tuple[str, str]:
    ctx = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    for name, value in settings.items():
        setattr(ctx, name, value)
    with socket.create_connection((server.host, server.port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            return tls.version(), tls.cipher()[0]


def test_ssl_ciphers_and_ssl_version(pki):
    tls = ["--ssl-certfile", str(pki / "cert.pem"), "--ssl-keyfile", str(pki / "key.pem")]
    tls12 = {"maximum_version": ssl.TLSVersion.TLSv1_2}
    with serve(*tls, "--ssl-ciphers", "ECDHE+CHACHA20:!aNULL") as server:
        version, cipher = handshake(server, pki, **tls12)
        assert version == "TLSv1.2" and "CHACHA20" in cipher
        # TLS 1.3 suites stay on, as with OpenSSL's cipher list.
        assert handshake(server, pki)[0] == "TLSv1.3"
    with serve(*tls, "--ssl-ciphers", "ECDHE+AES256") as server:
        assert "AES256-GCM" in handshake(server, pki, **tls12)[1]
    with serve(*tls, "--ssl-version", "5") as server:
        assert handshake(server, pki)[0] == "TLSv1.2"
        with pytest.raises(ssl.SSLError):
            handshake(server, pki, minimum_version=ssl.TLSVersion.TLSv1_3)


# ------------------------------------------------------------------ Python API
def test_python_keywords_for_the_new_options(tmp_path):
    argv = _options.to_argv(
        "cli_app:app",
        {
            "headers": [("X-A", "1"), "X-B:2"],
            "bind": "127.0.0.1:0",
            "env": ["K=V"],
            "reset_contextvars": True,
            "ssl_version": 17,
            "keep_alive": 3,
        },
    )
    assert argv == [
        "cli_app:app",
        "--header", "X-A:1", "--header", "X-B:2",
        "--bind", "127.0.0.1:0",
        "--env", "K=V",
        "--reset-contextvars",
        "--ssl-version", "17",
        "--timeout-keep-alive", "3",
    ]  # fmt: skip
    with pytest.raises(TypeError, match="headers must be a string or a list of strings"):
        _options.to_argv("cli_app:app", {"headers": [1]})

    env_file = tmp_path / "app.env"
    env_file.write_text("FROM_FILE=1\n")
    options = {"headers": [("X-A", "1")], "env": ["K=V"], "env_file": str(env_file)}
    with testing.serve(
        "cli_app:app", app_dir=str(APPS_DIR), bind=["127.0.0.1:0"], **options
    ) as url:
        response = httpx.get(url + "/?env=K&env=FROM_FILE", timeout=5)
        assert response.headers["x-a"] == "1"
        assert response.json()["env"] == {"K": "V", "FROM_FILE": "1"}
