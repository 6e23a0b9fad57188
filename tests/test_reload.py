"""--reload against real servers: a small app copied into a temporary directory is
edited while the server runs, and what clients get back is checked."""

import shutil
import signal
import socket
import statistics
import threading
import time
from pathlib import Path

import httpx
import pytest
from ferrocorn import _options

from tests.server import APPS_DIR, Server, alive, plain_python_contract

APP = """\
import asyncio
import os
from pathlib import Path

VERSION = "{version}"
PAGE = (Path(__file__).parent / "page.html").read_text()


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    if scope["path"] == "/slow":
        await asyncio.sleep(1)
    body = {{"/page": PAGE, "/pid": str(os.getpid())}}.get(scope["path"], VERSION)
    await send({{"type": "http.response.start", "status": 200, "headers": []}})
    await send({{"type": "http.response.body", "body": body.encode()}})
"""

TRACEBACK = "Traceback (most recent call last)"
RELOADING = "Reloading..."


def write_app(directory: Path, version: str) -> None:
    # Written in place, as most editors save (the watcher also sees renames).
    (directory / "main.py").write_text(APP.format(version=version))


@pytest.fixture
def project(tmp_path):
    write_app(tmp_path, "v1")
    (tmp_path / "page.html").write_text("<p>first</p>")
    return tmp_path


def reload_server(project: Path, *args: str) -> Server:
    return Server("main:app", "--reload", *args, cwd=project)


def get(server: Server, path: str = "/", timeout: float = 10) -> str:
    r = httpx.get(f"{server.url}{path}", headers={"Connection": "close"}, timeout=timeout)
    assert r.status_code == 200
    return r.text


def wait_for_body(server: Server, expected: str, path: str = "/", within: float = 10) -> float:
    """Poll until `path` answers `expected`; returns the seconds it took."""
    start = time.monotonic()
    while True:
        try:
            if get(server, path) == expected:
                return time.monotonic() - start
        except httpx.HTTPError:
            pass
        assert time.monotonic() - start < within, server.stderr_text()
        time.sleep(0.02)


def reloads(server: Server) -> int:
    return server.stderr_text().count(RELOADING)


def wait_for_count(server: Server, text: str, count: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while server.stderr_text().count(text) < count:
        assert time.monotonic() < deadline, f"{text!r} x{count}:\n{server.stderr_text()}"
        time.sleep(0.02)


FASTAPI_APP = """\
from fastapi import FastAPI

app = FastAPI()


@app.get("/")
async def root():
    return {{"version": "{version}"}}
"""


def report(capsys, what: str, latencies: list[float]) -> None:
    with capsys.disabled():
        print(
            f"\nreload latency, save -> new code served ({what}, --reload-delay 0.25): "
            f"median {statistics.median(latencies):.3f} s, max {max(latencies):.3f} s, "
            f"all {[round(x, 3) for x in latencies]}"
        )


def test_edit_is_served_within_two_seconds(project, capsys):
    with reload_server(project) as s:
        master, port = s.pid, s.port
        s.wait_for_log(rf"Will watch for changes in these directories: \['{project.resolve()}'\]")
        assert get(s) == "v1"
        latencies = []
        for n in range(2, 6):
            # Let the previous reload's workers settle, as between two real saves.
            time.sleep(0.3)
            write_app(project, f"v{n}")
            latencies.append(wait_for_body(s, f"v{n}"))
        report(capsys, "raw ASGI app", latencies)
        assert max(latencies) < 2.0, latencies
        assert "WatchFiles detected changes in 'main.py'. Reloading..." in s.stderr_text()
        assert reloads(s) == 4
        # The master and its socket never restarted.
        assert alive(master) and s.pid == master and s.port == port
        assert s.stderr_text().count("Started master process") == 1


def test_fastapi_edit_is_served_within_two_seconds(tmp_path, capsys):
    (tmp_path / "main.py").write_text(FASTAPI_APP.format(version="v1"))
    with reload_server(tmp_path) as s:
        latencies = []
        for n in range(2, 5):
            time.sleep(0.3)
            (tmp_path / "main.py").write_text(FASTAPI_APP.format(version=f"v{n}"))
            latencies.append(wait_for_body(s, f'{{"version":"v{n}"}}'))
        report(capsys, "FastAPI app", latencies)
        assert max(latencies) < 2.0, latencies


def test_syntax_error_is_shown_once_and_fixed_by_the_next_save(project):
    with reload_server(project, "--workers", "2") as s:
        assert get(s) == "v1"
        (project / "main.py").write_text("VERSION = (\n")
        s.wait_for_log("waiting for a file change to reload")
        # Both workers failed to import it; the traceback is logged once.
        time.sleep(1)
        log = s.stderr_text()
        assert log.count(TRACEBACK) == 1, log
        assert log.count("SyntaxError: '(' was never closed") == 2  # traceback + reason
        assert log.count("Error loading ASGI app") == 1
        reason = s.wait_for_log(r"Error loading ASGI app\. (.*)").group(1)
        assert reason == f"SyntaxError: '(' was never closed ({project / 'main.py'}, line 1)"
        assert s.proc.poll() is None
        assert s.worker_pids() == set()

        # No worker is up, yet the port accepts: the request waits in the backlog.
        answers: list[str] = []
        errors: list[BaseException] = []

        def waiting_request():
            try:
                with socket.create_connection((s.host, s.port), timeout=15) as sock:
                    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    data = b""
                    while chunk := sock.recv(65536):
                        data += chunk
                answers.append(data.decode())
            except BaseException as exc:  # noqa: BLE001 - any failure fails the test
                errors.append(exc)

        waiting = threading.Thread(target=waiting_request)
        waiting.start()
        time.sleep(0.5)
        assert answers == [] and errors == []  # connected, not refused, not answered

        write_app(project, "v2")
        waiting.join(15)
        assert errors == []
        assert answers and answers[0].startswith("HTTP/1.1 200") and answers[0].endswith("v2")
        assert get(s) == "v2"
        assert len(s.wait_for_workers(2)) == 2
        assert s.stderr_text().count(TRACEBACK) == 1


def test_app_broken_at_startup_waits_for_the_fix(project):
    (project / "main.py").write_text("import no_such_module_here\n")
    s = reload_server(project)
    try:
        # Where it listens (Server.start would wait for a ready app).
        s.host, port = s.wait_for_log(r"running on http://(\S+):(\d+)").groups()
        s.port = int(port)
        s.url = f"http://{s.host}:{s.port}"
        s.wait_for_log("waiting for a file change to reload")
        assert "ModuleNotFoundError: No module named 'no_such_module_here'" in s.stderr_text()
        assert s.proc.poll() is None
        write_app(project, "v1")
        s.wait_for_log("ferrocorn ready")
        assert get(s) == "v1"
        assert s.stderr_text().count(TRACEBACK) == 1
    finally:
        s.stop()


def test_hup_retries_a_failed_boot_without_a_change(project):
    # The fix is in a file the watcher ignores (as a `pip install` outside the project).
    (project / "main.py").write_text("from helper import VERSION\n" + APP.format(version="x"))
    s = reload_server(project, "--reload-exclude", "helper.py")
    try:
        s.wait_for_log("waiting for a file change to reload")
        (project / "helper.py").write_text("VERSION = 'from helper'\n")
        time.sleep(1)
        assert "ferrocorn ready" not in s.stderr_text()
        s.signal(signal.SIGHUP)
        s.start()
        assert get(s) == "x"  # APP's own VERSION comes after the import
        assert reloads(s) == 0
        assert "Trying to boot the application again (HUP)" in s.stderr_text()
    finally:
        s.stop()


def test_failed_lifespan_startup_waits_too(project):
    with reload_server(project) as s:
        (project / "main.py").write_text(
            "async def app(scope, receive, send):\n"
            "    assert scope['type'] == 'lifespan'\n"
            "    await receive()\n"
            "    await send({'type': 'lifespan.startup.failed', 'message': 'no database'})\n"
        )
        s.wait_for_log("waiting for a file change to reload")
        assert "no database" in s.stderr_text()
        assert s.proc.poll() is None
        write_app(project, "v2")
        wait_for_body(s, "v2")


LIFESPAN_APP = """\
async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        await receive()
        if {broken}:
            raise RuntimeError("the database is down")
        await send({{"type": "lifespan.startup.complete"}})
        await receive()
        await send({{"type": "lifespan.shutdown.complete"}})
        return
    await send({{"type": "http.response.start", "status": 200, "headers": []}})
    await send({{"type": "http.response.body", "body": b"up"}})
"""


def test_exception_in_lifespan_startup_is_shown_once(project):
    (project / "main.py").write_text(LIFESPAN_APP.format(broken=False))
    with reload_server(project, "--lifespan", "on", "--workers", "2") as s:
        assert get(s) == "up"
        (project / "main.py").write_text(LIFESPAN_APP.format(broken=True))
        s.wait_for_log("waiting for a file change to reload")
        time.sleep(1)
        log = s.stderr_text()
        assert log.count(TRACEBACK) == 1, log
        assert log.count("RuntimeError: the database is down") == 1
        assert "Application startup failed: RuntimeError('the database is down')" in log
        (project / "main.py").write_text(LIFESPAN_APP.format(broken=False))
        wait_for_body(s, "up")
        assert len(s.wait_for_workers(2)) == 2


# Which saved files reload, for a few uvicorn command lines. The answers are those of
# uvicorn 0.54's own FileFilter and watched directories, checked against it, with one
# deliberate difference: a relative directory given to --reload-exclude ("vendor")
# excludes the files below it here, where uvicorn compares it with absolute paths and
# so never excludes anything with it (an absolute one works in both).
RELOAD_TABLE = [
    (
        ("--reload-include", "*.html", "--reload-exclude", "test_*.py"),
        ["app.py", "pkg/models.py", "templates/index.html", ".git/hooks.py"],
        [
            "test_app.py",
            "pkg/test_models.py",
            ".hidden.py",
            "~backup.py",
            "notes.txt",
            "x.pyc",
            "__pycache__/main.cpython-311.pyc",
        ],
    ),
    (
        ("--reload-exclude", "vendor"),
        ["app.py"],
        ["vendor/lib.py", "vendor/sub/deep.py"],
    ),
    (
        # Excluding the default include turns Python files off.
        ("--reload-include", "*.html", "--reload-exclude", "*.py"),
        ["templates/index.html"],
        ["app.py", "pkg/models.py"],
    ),
    (
        # Including a default exclude turns it back on.
        (
            "--reload-include",
            ".*",
        ),
        [".env", ".hidden.py"],
        ["~backup.py", "notes.txt"],
    ),
    (
        # A directory given to --reload-include is watched, and (as in uvicorn) then
        # replaces the current directory as what is watched.
        ("--reload-include", "templates"),
        ["templates/macros.py"],
        ["app.py", "templates/index.html"],
    ),
]


@pytest.mark.parametrize("flags, reloading, quiet", RELOAD_TABLE)
def test_which_files_reload_as_under_uvicorn(project, flags, reloading, quiet):
    for directory in ("pkg", "templates", "vendor/sub", ".git", "__pycache__"):
        (project / directory).mkdir(parents=True, exist_ok=True)
    with reload_server(project, *flags) as s:
        for name in quiet:
            (project / name).write_text("x = 1\n")
        time.sleep(1.5)
        assert reloads(s) == 0, s.stderr_text()
        for n, name in enumerate(reloading, 1):
            (project / name).write_text("x = 1\n")
            wait_for_count(s, RELOADING, n)
            assert f"detected changes in '{name}'. Reloading..." in s.stderr_text()
            wait_for_count(s, "ferrocorn ready", n + 1)


def test_reload_include_of_templates(project):
    with reload_server(project, "--reload-include", "*.html") as s:
        assert get(s, "/page") == "<p>first</p>"
        (project / "page.html").write_text("<p>second</p>")
        wait_for_body(s, "<p>second</p>", "/page", within=2)
        assert "detected changes in 'page.html'" in s.stderr_text()


def test_reload_dir_limits_what_is_watched(project):
    (project / "pkg").mkdir()
    with reload_server(project, "--reload-dir", "pkg", "--reload-dir", "missing") as s:
        s.wait_for_log(rf"directories: \['{(project / 'pkg').resolve()}'\]")
        s.wait_for_log(r"Ignoring reload directories that are not directories: \['missing'\]")
        write_app(project, "v2")  # outside pkg/
        time.sleep(1)
        assert reloads(s) == 0
        (project / "pkg" / "models.py").write_text("x = 1\n")
        wait_for_count(s, RELOADING, 1)
        assert "detected changes in 'pkg/models.py'" in s.stderr_text()
        wait_for_body(s, "v2")


def test_no_valid_reload_dir_watches_the_current_one(project):
    with reload_server(project, "--reload-dir", "missing") as s:
        s.wait_for_log(
            r"Provided reload directories \['missing'\] did not contain valid directories, "
            r"watching current working directory\."
        )
        s.wait_for_log(rf"directories: \['{project.resolve()}'\]")


def test_a_burst_of_saves_reloads_once(project):
    with reload_server(project, "--reload-delay", "0.5") as s:
        for n in range(2, 7):
            write_app(project, f"v{n}")
            (project / f"mod{n}.py").write_text("x = 1\n")
            time.sleep(0.1)
        wait_for_body(s, "v6")
        time.sleep(1)
        assert reloads(s) == 1, s.stderr_text()
        line = s.wait_for_log(r"detected changes in (.*)\. Reloading").group(1)
        assert line == "'main.py', 'mod2.py', 'mod3.py', 'mod4.py', 'mod5.py', 'mod6.py'"


def test_a_save_while_the_new_workers_boot_starts_them_over(project):
    with reload_server(project, "--workers", "2") as s:
        old = s.wait_for_workers(2)
        # v2 takes 3 s to import; v3 is saved while it does.
        (project / "main.py").write_text("import time\ntime.sleep(3)\n" + APP.format(version="v2"))
        wait_for_count(s, RELOADING, 1)
        booting = s.wait_for_workers(2, exclude=old)
        time.sleep(0.5)
        write_app(project, "v3")
        latency = wait_for_body(s, "v3")
        assert latency < 3, latency  # the slow boot was given up, not waited for
        assert not (s.worker_pids() & booting)
        assert reloads(s) == 2
        assert TRACEBACK not in s.stderr_text()
        assert "exited with" not in s.stderr_text()


def test_every_worker_is_replaced(project):
    with reload_server(project, "--workers", "2") as s:
        old = s.wait_for_workers(2)
        write_app(project, "v2")
        new = s.wait_for_workers(2, exclude=old)
        wait_for_body(s, "v2")
        # Whichever worker answers, it runs the new code.
        for _ in range(10):
            assert get(s) == "v2"
        assert len(new) == 2
        assert s.stderr_text().count("ferrocorn ready: 2 worker(s)") == 2


def test_requests_during_a_reload_are_answered(project):
    with reload_server(project, "--workers", "2") as s:
        failures: list[str] = []
        bodies: list[str] = []
        stop = threading.Event()

        def load():
            while not stop.is_set():
                try:
                    bodies.append(get(s))
                except (httpx.HTTPError, AssertionError) as exc:
                    failures.append(repr(exc))

        slow: list[str] = []
        threads = [threading.Thread(target=load) for _ in range(2)]
        slow_thread = threading.Thread(target=lambda: slow.append(get(s, "/slow")))
        for t in threads:
            t.start()
        time.sleep(0.3)
        slow_thread.start()  # in flight in an old worker when the save lands
        time.sleep(0.2)
        write_app(project, "v2")
        wait_for_body(s, "v2")
        time.sleep(0.3)
        write_app(project, "v3")
        wait_for_body(s, "v3")
        time.sleep(0.3)
        stop.set()
        for t in [*threads, slow_thread]:
            t.join(15)
        assert failures == []
        assert slow == ["v1"]  # the old worker finished it before exiting
        assert {"v1", "v2", "v3"} <= set(bodies)
        assert len(bodies) > 30


def test_workers_keep_the_plain_python_contract(tmp_path):
    from tests.test_contract import check_one_worker

    shutil.copy(APPS_DIR / "contract_probe.py", tmp_path)
    with Server("contract_probe:app", "--reload", "--lifespan", "on", cwd=tmp_path) as s:
        expected = _plain_results()
        first = s.wait_for_workers(1)
        check_one_worker(s, expected)
        (tmp_path / "touch.py").write_text("x = 1\n")
        s.wait_for_workers(1, exclude=first)
        s.wait_for_log("ferrocorn ready(.|\n)*ferrocorn ready")
        check_one_worker(AfterReload(s), expected)


class AfterReload:
    """The server as check_one_worker sees it: its log from the reloaded workers' start
    (the reload itself logs the old worker's shutdown)."""

    def __init__(self, server: Server):
        self.url = server.url
        self.server = server

    def stderr_text(self) -> str:
        return self.server.stderr_text().rsplit("ferrocorn ready", 1)[1]


def _plain_results() -> dict:
    return plain_python_contract()


def test_without_reload_a_boot_failure_still_stops_the_server(project):
    (project / "main.py").write_text("VERSION = (\n")
    s = Server("main:app", "--workers", "2", "--reload-dir", ".", cwd=project)
    try:
        assert s.wait(20) == 1
        log = s.stderr_text()
        assert log.count(TRACEBACK) == 1, log
        assert "Current configuration will not reload" in log
        assert "Application failed to boot; stopping" in log
    finally:
        s.stop()


def test_keywords_become_reload_flags():
    argv = _options.to_argv(
        "main:app",
        {
            "reload": True,
            "reload_dirs": ["src", Path("lib")],
            "reload_includes": "*.html",
            "reload_excludes": [],
            "reload_delay": 0.5,
        },
    )
    assert argv == [
        "main:app",
        "--reload",
        "--reload-dir",
        "src",
        "--reload-dir",
        "lib",
        "--reload-include",
        "*.html",
        "--reload-delay",
        "0.5",
    ]
    assert _options.takes_value("--reload-dir") and not _options.takes_value("--reload")
