"""The Python API (docs/api.md): run(), Config, Server, ferrocorn.testing. Every server
here is a real ferrocorn process on 127.0.0.1, talked to with httpx."""

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import ferrocorn
import httpx
import pytest
from ferrocorn import _options
from ferrocorn.testing import aserve, serve

from tests.apps import check_apps
from tests.server import APPS_DIR, Server, alive, children_of


def process_signal_state() -> dict:
    """What a process's signal state is: Python handlers and the kernel's masks."""
    with open("/proc/self/status") as f:
        masks = {k: v.strip() for k, v in (line.split(":", 1) for line in f) if k.startswith("Sig")}
    masks = {k: int(v, 16) for k, v in masks.items() if k in ("SigBlk", "SigIgn", "SigCgt")}
    # glibc installs its own handler for its reserved signals 32 and 33 (SIGCANCEL,
    # SIGSETXID) when a process starts its first thread: not the app's concern.
    masks = {k: v & ~(0b11 << 31) for k, v in masks.items()}
    handlers = {s: signal.getsignal(s) for s in signal.valid_signals() if s not in (9, 19)}
    return {"masks": masks, "handlers": handlers}


# ------------------------------------------------------------------ options
def help_options() -> dict[str, str | None]:
    """Every long option of `ferrocorn --help` with its default (None: no default)."""
    out = subprocess.run(
        [sys.executable, "-m", "ferrocorn", "--help"], capture_output=True, text=True, check=True
    ).stdout
    options: dict[str, str | None] = {}
    current = None
    for line in out.splitlines():
        # A value may be optional: `--proxy-protocol [<MODE>]`.
        match = re.match(r"^\s+(?:-\w, )?--([\w-]+)( \[?<[\w:=]+>\]?)?$", line)
        if match:
            current = match.group(1)
            options[current] = None
            continue
        default = re.match(r"^\s+\[default: (.*)\]$", line)
        if default and current:
            options[current] = default.group(1).strip('"')
    return options


def test_every_option_is_a_keyword_with_the_same_default():
    from_help = help_options()
    from_help.pop("help"), from_help.pop("version")
    negated = {n for n in from_help if n.startswith("no-") and n[3:] in from_help}
    table = {o.cli[2:]: o for o in _options.OPTIONS.values()}
    assert set(from_help) - negated == set(table)
    for o in _options.OPTIONS.values():
        if o.kind == _options.NEGATABLE:
            assert "no-" + o.cli[2:] in negated, o.name
        default = from_help[o.cli[2:]]
        if o.kind in (_options.FLAG, _options.NEGATABLE):
            assert default is None, o.name
        elif o.default is None:
            assert default is None, o.name
        elif o.kind == _options.BOOL_VALUE:
            assert default == str(o.default).lower(), o.name
        elif isinstance(o.default, float):
            assert float(default) == o.default, o.name
        else:
            assert default == str(o.default), o.name


def test_keywords_become_the_command_line():
    argv = _options.to_argv(
        "main:app",
        {
            "port": 0,
            "workers": 2,
            "access_log": False,
            "server_header": True,
            "factory": True,
            "ws_per_message_deflate": False,
            "limit_max_requests": 10,
            "loop": "asyncio",
            "log_level": 30,
            "timeout_graceful_shutdown": 2.5,
            "uds": None,
        },
    )
    assert argv == [
        "main:app",
        "--port",
        "0",
        "--workers",
        "2",
        "--no-access-log",
        "--server-header",
        "--factory",
        "--ws-per-message-deflate",
        "false",
        "--max-requests",
        "10",
        "--loop",
        "asyncio",
        "--log-level",
        "warning",
        "--timeout-graceful-shutdown",
        "2.5",
    ]
    assert _options.to_argv("main:app", {"factory": False}) == ["main:app"]


@pytest.mark.parametrize(
    "options, error, message",
    [
        ({"prot": 8000}, TypeError, "ferrocorn has no option 'prot'; did you mean 'port'?"),
        ({"timeout_notify": 5}, TypeError, "ferrocorn has no option 'timeout_notify' (a uvicorn"),
        ({"reload_dirs": 3}, TypeError, "reload_dirs must be a string or a list of strings, not 3"),
        ({"port": "8000"}, TypeError, "port must be an integer, not '8000'"),
        ({"workers": True}, TypeError, "workers must be an integer, not True"),
        ({"access_log": "no"}, TypeError, "access_log must be True or False, not 'no'"),
        ({"lifespan": "maybe"}, ValueError, "lifespan must be one of auto, on, off"),
        ({"port": 70000}, ValueError, "port must be 0 to 65535, not 70000"),
        ({"log_level": 25}, ValueError, "log_level 25 is not one of logging's levels"),
    ],
)
def test_bad_keywords_raise_before_anything_starts(options, error, message):
    for call in (
        lambda: ferrocorn.run("check_apps:app", **options),
        lambda: ferrocorn.Config("check_apps:app", **options),
    ):
        with pytest.raises(error) as info:
            call()
        assert str(info.value).startswith(message)


def test_config_reads_options_and_defaults():
    config = ferrocorn.Config("main:app", port=9000, access_log=False, limit_max_requests=5)
    assert (config.port, config.host, config.access_log) == (9000, "127.0.0.1", False)
    assert (config.max_requests, config.workers, config.timeout_keep_alive) == (5, 1, 5.0)
    assert config.to_argv() == [
        "main:app",
        "--port",
        "9000",
        "--no-access-log",
        "--max-requests",
        "5",
    ]
    assert (config.reload, config.reload_delay, config.reload_dirs) == (False, 0.25, None)
    with pytest.raises(AttributeError):
        config.no_such_option  # noqa: B018


def test_run_serves_in_this_process_with_keywords():
    # run() makes the calling process the master: a real program calling it.
    program = (
        "import sys, ferrocorn\n"
        "sys.exit(ferrocorn.run('check_apps:app', host='127.0.0.1', port=0, workers=2,"
        " access_log=False, server_header=False, date_header=False, timeout_keep_alive=1,"
        " limit_max_requests=1000, ws_per_message_deflate=False, lifespan='on'))\n"
    )
    server = Server("", cmd=[sys.executable, "-c", program])
    with server:
        assert len(server.wait_for_workers(2)) == 2
        response = httpx.get(server.url + "/x")
        assert response.status_code == 200
        assert response.text.startswith("/x ")
        assert "server" not in response.headers and "date" not in response.headers
        assert server.signal(signal.SIGTERM) is None
        assert server.wait() == 0
    assert server.stdout_text() == ""  # access_log=False
    assert server.stderr_text().count("Application shutdown complete.") == 2


# ------------------------------------------------------------------- Server
async def _serve_once(config: ferrocorn.Config) -> ferrocorn.Server:
    server = ferrocorn.Server(config)
    task = asyncio.create_task(server.serve())
    await server.wait_started(30)
    return server, task


def test_server_serves_from_a_running_loop_and_stops_on_should_exit(tmp_path, monkeypatch):
    record = tmp_path / "record"
    monkeypatch.setenv("FERROCORN_TEST_RECORD", str(record))
    before = process_signal_state()
    threads = threading.active_count()

    async def main():
        in_loop = process_signal_state()  # asyncio.run() has its own SIGINT handler
        config = ferrocorn.Config(
            "check_apps:app", app_dir=str(APPS_DIR), port=0, workers=2, log_level="warning"
        )
        server, task = await _serve_once(config)
        assert server.started is True
        assert server.port > 0 and server.host == "127.0.0.1"
        assert server.url == f"http://127.0.0.1:{server.port}"
        async with httpx.AsyncClient(base_url=server.url) as client:
            response = await client.get("/hello")
        assert response.status_code == 200 and response.text.startswith("/hello ")
        # The caller's process kept its signal state while serving.
        assert process_signal_state() == in_loop
        assert set(children_of(os.getpid())) == {server.pid}
        server.should_exit = True
        await asyncio.wait_for(task, 30)
        return server

    server = asyncio.run(main())
    assert server.exit_code == 0
    assert not alive(server.pid)
    # Graceful: lifespan shutdown ran in both workers.
    lines = record.read_text().splitlines()
    assert len(lines) == 2 and all(line.startswith("shutdown ") for line in lines)
    assert len(set(lines)) == 2  # two worker pids
    assert "Application shutdown complete." in server.log
    assert process_signal_state() == before
    deadline = time.monotonic() + 5
    while threading.active_count() > threads:
        assert time.monotonic() < deadline, threading.enumerate()
        time.sleep(0.05)


def test_server_shutdown_waits_and_stop_works_from_another_thread():
    async def main():
        config = ferrocorn.Config("check_apps:app", app_dir=str(APPS_DIR), port=0)
        server, task = await _serve_once(config)
        await server.shutdown()
        assert server.exit_code == 0 and not alive(server.pid)
        await task

        server, task = await _serve_once(config)
        threading.Thread(target=server.stop).start()
        await asyncio.wait_for(task, 30)
        assert server.exit_code == 0

    asyncio.run(main())


def test_cancelling_serve_stops_the_server():
    async def main():
        config = ferrocorn.Config("check_apps:app", app_dir=str(APPS_DIR), port=0)
        server, task = await _serve_once(config)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert server.exit_code == 0
        assert not alive(server.pid)

    asyncio.run(main())


def test_server_run_blocks_until_stopped():
    config = ferrocorn.Config("check_apps:app", app_dir=str(APPS_DIR), port=0)
    server = ferrocorn.Server(config)
    result = []
    thread = threading.Thread(target=lambda: result.append(server.run()))
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert httpx.get(server.url + "/").status_code == 200
    server.stop()
    thread.join(30)
    assert result == [0]


def test_startup_failure_is_reported():
    async def main():
        config = ferrocorn.Config("lifespan_app:failing", app_dir=str(APPS_DIR), port=0)
        server = ferrocorn.Server(config)
        task = asyncio.create_task(server.serve())
        with pytest.raises(ferrocorn.StartupFailed) as info:
            await server.wait_started(30)
        await task  # serve() returns, as uvicorn's does
        assert server.started is False
        return server, info.value

    server, error = asyncio.run(main())
    assert server.exit_code == 3 and error.exit_code == 3
    assert str(error).startswith("ferrocorn exited with code 3 before it was ready:\n")
    assert "Application startup failed. database unreachable" in str(error)


def test_log_level_filters_what_is_forwarded(capfd):
    async def main(level):
        config = ferrocorn.Config(
            "check_apps:app", app_dir=str(APPS_DIR), port=0, log_level=level, access_log=False
        )
        server, task = await _serve_once(config)
        await server.shutdown()
        await task
        return server

    server = asyncio.run(main("warning"))
    # The server still logged at info (that is how ready is known) ...
    assert "ferrocorn ready" in server.log
    # ... but nothing below warning reached this process's stderr.
    assert capfd.readouterr().err == ""
    asyncio.run(main("info"))
    err = capfd.readouterr().err
    assert "INFO:     ferrocorn ready: 1 worker(s)" in err
    assert "INFO:     Application shutdown complete." in err


# ------------------------------------------------------------ app objects
def test_an_app_object_is_served_by_its_import_string():
    config = ferrocorn.Config(check_apps.app, port=0)
    assert config.import_string == "tests.apps.check_apps:app"
    with serve(check_apps.app) as url:
        assert httpx.get(url + "/obj").text.startswith("/obj ")


def test_an_app_object_without_an_import_string_is_refused():
    async def local_app(scope, receive, send):
        pass

    with pytest.raises(ValueError) as info:
        ferrocorn.Config(local_app)
    assert str(info.value).startswith(
        "ferrocorn runs the app in worker processes that import it, so it needs the app as an"
        " import string such as 'main:app'"
    )
    with pytest.raises(ValueError):
        ferrocorn.run(local_app)


def test_a_script_app_object_is_imported_by_file_name(tmp_path):
    script = tmp_path / "myscript.py"
    script.write_text(
        "import ferrocorn\n"
        "async def app(scope, receive, send):\n"
        "    if scope['type'] != 'http':\n"
        "        return\n"
        "    await send({'type': 'http.response.start', 'status': 200, 'headers': []})\n"
        "    await send({'type': 'http.response.body', 'body': __name__.encode()})\n"
        "if __name__ == '__main__':\n"
        "    print(ferrocorn.Config(app).import_string, flush=True)\n"
        "    raise SystemExit(ferrocorn.run(app, port=0))\n"
    )
    server = Server("", cmd=[sys.executable, str(script)], cwd=APPS_DIR)
    with server:
        assert server.stdout_text().splitlines()[0] == "myscript:app"
        # The worker imported the file as module "myscript" (from its directory).
        assert httpx.get(server.url).text == "myscript"


# ------------------------------------------------------------------ testing
def test_testing_serve_yields_the_url_and_stops_the_server():
    with serve("check_apps:app", app_dir=str(APPS_DIR), workers=2) as url:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", url)
        assert httpx.get(url + "/t").status_code == 200
        port = int(url.rsplit(":", 1)[1])
        (master,) = children_of(os.getpid())
        workers = children_of(master)
        assert len(workers) == 2
    assert not alive(master) and not any(alive(w) for w in workers)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2)


def test_testing_serve_on_a_unix_socket(tmp_path):
    path = str(tmp_path / "s.sock")
    with serve("check_apps:app", app_dir=str(APPS_DIR), uds=path) as where:
        assert where == path
        transport = httpx.HTTPTransport(uds=path)
        with httpx.Client(transport=transport) as client:
            assert client.get("http://x/u").text.startswith("/u ")
    assert not os.path.exists(path)


def test_testing_serve_raises_startup_failed():
    with pytest.raises(ferrocorn.StartupFailed) as info:
        with serve("lifespan_app:failing", app_dir=str(APPS_DIR)):
            raise AssertionError("never reached")
    assert info.value.exit_code == 3
    assert "database unreachable" in str(info.value)


def test_testing_aserve():
    async def main():
        async with aserve("check_apps:app", app_dir=str(APPS_DIR)) as url:
            async with httpx.AsyncClient() as client:
                response = await client.get(url + "/a")
            (master,) = children_of(os.getpid())
        return response, master

    response, master = asyncio.run(main())
    assert response.status_code == 200 and response.text.startswith("/a ")
    assert not alive(master)


def test_the_server_stops_when_its_parent_dies():
    program = (
        "import os, sys, time\n"
        "from ferrocorn.testing import serve\n"
        f"with serve('check_apps:app', app_dir={str(APPS_DIR)!r}) as url:\n"
        "    print(url, flush=True)\n"
        "    time.sleep(60)\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", program], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        url = parent.stdout.readline().strip()
        assert httpx.get(url).status_code == 200
        (master,) = children_of(parent.pid)
        workers = children_of(master)
        parent.kill()
        parent.wait(10)
        deadline = time.monotonic() + 20
        while alive(master) or any(alive(w) for w in workers):
            assert time.monotonic() < deadline, "the server outlived its parent"
            time.sleep(0.05)
    finally:
        try:
            os.killpg(parent.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_ready_is_read_from_the_error_logfile(tmp_path):
    logfile = tmp_path / "error.log"
    logfile.write_text("an older line\n")

    async def main():
        config = ferrocorn.Config(
            "check_apps:app", app_dir=str(APPS_DIR), port=0, error_logfile=logfile
        )
        server, task = await _serve_once(config)
        assert httpx.get(server.url + "/f").status_code == 200
        await server.shutdown()
        await task
        return server

    server = asyncio.run(main())
    assert server.exit_code == 0
    assert server.log.startswith("INFO:     Started master process")
    assert "an older line" not in server.log
    text = logfile.read_text()
    assert text.startswith("an older line\nINFO:     Started master process")
    assert text.endswith(server.log)


def test_serve_on_a_socket_the_caller_bound():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]

    async def main():
        server = ferrocorn.Server(ferrocorn.Config("check_apps:app", app_dir=str(APPS_DIR)))
        task = asyncio.create_task(server.serve(sockets=[listener]))
        await server.wait_started(30)
        assert (server.url, server.port) == (f"http://127.0.0.1:{port}", port)
        async with httpx.AsyncClient() as client:
            response = await client.get(f"http://127.0.0.1:{port}/s")
        await server.shutdown()
        await task
        return response, server

    with listener:
        response, server = asyncio.run(main())
        assert response.text.startswith("/s ")
        assert server.exit_code == 0
        # The caller's socket is still its own, still open.
        assert listener.fileno() >= 0 and listener.getsockname()[1] == port
    with pytest.raises(ValueError):
        asyncio.run(ferrocorn.Server(ferrocorn.Config("m:app")).serve(sockets=[1, 2]))
