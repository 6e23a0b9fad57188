"""Process lifecycle: command line, app loading, lifespan, graceful and quick stop."""

import signal
import subprocess
import sys
import threading
import time

import httpx

from tests.server import Server, run_to_exit


def test_help_and_version():
    out = subprocess.run(
        [sys.executable, "-m", "ferrocorn", "--help"], capture_output=True, text=True
    )
    assert out.returncode == 0
    for flag in ("--workers", "--uds", "--fd", "--lifespan", "--limit-concurrency", "--root-path"):
        assert flag in out.stdout
    out = subprocess.run(
        [sys.executable, "-m", "ferrocorn", "--version"], capture_output=True, text=True
    )
    assert out.returncode == 0 and "ferrocorn" in out.stdout


def test_bad_app_strings_exit_with_one_clear_line():
    # Exit code 3, uvicorn's STARTUP_FAILURE.
    for app, message in [
        ("nope:app", 'Could not import module "nope"'),
        ("basic:missing", 'Attribute "missing" not found in module "basic"'),
        ("basic", "must be in format"),
    ]:
        out = run_to_exit(app)
        assert out.returncode == 3, out.stderr
        errors = [line for line in out.stderr.splitlines() if line.startswith("ERROR:")]
        assert any(message in line for line in errors), out.stderr
        assert "Traceback" not in out.stderr
        assert "panicked" not in out.stderr


def test_factory_and_app_dir(tmp_path):
    with Server("basic:factory", "--factory") as s:
        assert httpx.get(f"{s.url}/count").status_code == 200
    (tmp_path / "elsewhere.py").write_text(
        "async def app(scope, receive, send):\n"
        "    if scope['type'] == 'http':\n"
        "        await send({'type': 'http.response.start', 'status': 204, 'headers': []})\n"
        "        await send({'type': 'http.response.body'})\n"
    )
    with Server("elsewhere:app", "--app-dir", str(tmp_path)) as s:
        assert httpx.get(f"{s.url}/").status_code == 204


def test_lifespan_state_and_shutdown(tmp_path):
    record = tmp_path / "shutdown.txt"
    s = Server("lifespan_app:app", env={"FERROCORN_TEST_RECORD": str(record)}).start()
    try:
        assert httpx.get(f"{s.url}/").text == "connected"
        s.signal(signal.SIGTERM)
        assert s.wait() == 0
    finally:
        s.stop()
    assert record.read_text() == "shutdown ran"
    assert "Application startup complete." in s.stderr_text()


def test_lifespan_off_and_unsupported():
    with Server("lifespan_app:app", "--lifespan", "off") as s:
        assert httpx.get(f"{s.url}/").text == "missing"
    with Server("basic:app") as s:
        assert "lifespan' protocol appears unsupported" in s.stderr_text()


def test_lifespan_startup_failure_exits_nonzero_with_message():
    out = run_to_exit("lifespan_app:failing")
    assert out.returncode == 3
    assert "database unreachable" in out.stderr
    assert "Traceback" not in out.stderr


def test_lifespan_on_requires_support():
    out = run_to_exit("basic:app", "--lifespan", "on")
    assert out.returncode == 3


def test_sigterm_drains_in_flight_request():
    s = Server("basic:app").start()
    try:
        result = {}

        def slow_request():
            result["r"] = httpx.get(f"{s.url}/slow?1.5", timeout=10)

        t = threading.Thread(target=slow_request)
        t.start()
        time.sleep(0.4)
        s.signal(signal.SIGTERM)
        time.sleep(0.3)
        # The listener is closed for new work while the old request finishes.
        try:
            refused = httpx.get(f"{s.url}/count", timeout=2).status_code != 200
        except httpx.HTTPError:
            refused = True
        assert refused
        t.join(10)
        assert result["r"].status_code == 200 and result["r"].text == "slept"
        assert s.wait() == 0
    finally:
        s.stop()


def test_graceful_timeout_cancels_long_requests():
    s = Server("basic:app", "--timeout-graceful-shutdown", "1").start()
    try:
        with s.connect() as sock:
            sock.sendall(b"GET /slow?30 HTTP/1.1\r\nHost: h\r\n\r\n")
            time.sleep(0.3)
            start = time.monotonic()
            s.signal(signal.SIGTERM)
            assert s.wait(15) == 0
            assert time.monotonic() - start < 8
        assert "graceful shutdown timeout exceeded" in s.stderr_text()
    finally:
        s.stop()


def test_sigint_is_a_quick_stop():
    s = Server("basic:app").start()
    try:
        s.signal(signal.SIGINT)
        assert s.wait() == 0
    finally:
        s.stop()


def test_access_log_and_its_switch():
    with Server("basic:app") as s:
        httpx.get(f"{s.url}/count?x=1")
        line = r'INFO:     127\.0\.0\.1:\d+ - "GET /count\?x=1 HTTP/1\.1" 200 OK\n'
        s.wait_for_log(line, stdout=True)
    with Server("basic:app", "--root-path", "/api") as s:
        # As uvicorn: the path logged includes the root path, and the reason phrase.
        httpx.get(f"{s.url}/raise_before")
        line = (
            r'INFO:     127\.0\.0\.1:\d+ - "GET /api/raise_before HTTP/1\.1" '
            r"500 Internal Server Error\n"
        )
        s.wait_for_log(line, stdout=True)
    with Server("basic:app", "--no-access-log", "--no-server-header", "--no-date-header") as s:
        r = httpx.get(f"{s.url}/count")
        assert "server" not in r.headers and "date" not in r.headers
        time.sleep(0.2)
        assert "GET /count" not in s.stdout_text()


def test_several_workers_serve():
    with Server("basic:app", "--workers", "2") as s:
        assert "2 worker(s)" in s.stderr_text()
        for _ in range(20):
            assert httpx.get(f"{s.url}/count").status_code == 200


def test_an_error_raised_while_importing_shows_its_whole_traceback():
    # As under uvicorn, at the default log level, and exit 1; then one line says why we
    # stop.
    out = run_to_exit("broken:app")
    assert out.returncode == 1
    assert "Traceback (most recent call last)" in out.stderr and "broken.py" in out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("ERROR:")]
    assert any("NameError: name 'undefined_name' is not defined" in e for e in errors)
    assert "panicked" not in out.stderr
