"""uvicorn compatibility (issue #11): behaviours that real apps and libraries rely on.

Each test describes what uvicorn 0.54 does (checked by running the same app under
`python -m uvicorn`; see tests/compat.py to rerun them that way) and asserts it of
ferrocorn.
"""

import asyncio
import hashlib
import json
import os
import re
import signal
import time

import httpx
import pytest

from tests.compat import compat_server, read_lines, run_to_exit, wait_until
from tests.server import APPS_DIR, raw_exchange

SHUTDOWN_FAILURES = ("Application shutdown failed", "CancelledError")


def stop_gracefully(s, timeout: float = 20.0) -> str:
    """SIGTERM the server, wait for it to exit and return everything it logged."""
    s.signal(signal.SIGTERM)
    s.wait(timeout)
    time.sleep(0.2)  # let the pump threads read the last lines
    return s.stderr_text()


# 1. Lifespan shutdown runs before the app's own background tasks are cancelled.


def test_litestar_shutdown_hooks_run_without_cancellation(tmp_path):
    """Litestar's lifespan holds an anyio task group (its event emitter) open while
    serving. uvicorn sends lifespan.shutdown while that group's worker task still runs,
    so the on_shutdown hooks run and Litestar answers lifespan.shutdown.complete."""
    pytest.importorskip("litestar")
    record = tmp_path / "record.txt"
    s = compat_server("compat_litestar:litestar_app", env={"COMPAT_RECORD": str(record)})
    try:
        s.start()
        assert httpx.get(f"{s.url}/").text == "litestar"
        log = stop_gracefully(s)
    finally:
        s.stop()
    assert read_lines(record) == ["litestar on_startup ran", "litestar on_shutdown ran"]
    for failure in SHUTDOWN_FAILURES:
        assert failure not in log, log
    assert "Application shutdown complete." in log


def test_fastapi_lifespan_task_group_cleans_up_after_yield(tmp_path):
    """A FastAPI lifespan with an anyio task group around `yield` and a background task
    in it: under uvicorn the code after `yield` runs, then the group closes."""
    record = tmp_path / "record.txt"
    s = compat_server("compat_lifespan:fastapi_taskgroup_app", env={"COMPAT_RECORD": str(record)})
    try:
        s.start()
        assert httpx.get(f"{s.url}/").json() == "fastapi"
        time.sleep(0.2)  # the heartbeat task has been around a while
        log = stop_gracefully(s)
    finally:
        s.stop()
    assert read_lines(record) == ["cleanup after yield ran", "task group closed"]
    for failure in SHUTDOWN_FAILURES:
        assert failure not in log, log
    assert "Application shutdown complete." in log


def test_flusher_task_flushes_everything_at_shutdown(tmp_path):
    """A task started at lifespan startup buffers events and flushes them when the
    lifespan shutdown tells it to stop: no event is lost when the server stops."""
    record = tmp_path / "record.txt"
    s = compat_server("compat_lifespan:flusher_app", env={"COMPAT_RECORD": str(record)})
    try:
        s.start()
        with httpx.Client(base_url=s.url) as client:
            for i in range(100):
                assert client.get(f"/event?event=e{i}").text == "buffered"
        assert read_lines(record) == []  # nothing flushed yet: the period is 30 s
        log = stop_gracefully(s)
    finally:
        s.stop()
    assert read_lines(record) == [f"e{i}" for i in range(100)] + ["flusher stopped"]
    for failure in SHUTDOWN_FAILURES:
        assert failure not in log, log


def test_quart_background_task_is_awaited_at_shutdown(tmp_path):
    """Quart's shutdown (run by lifespan.shutdown) awaits the tasks added with
    app.add_background_task; under uvicorn they are still running then and finish."""
    pytest.importorskip("quart")
    record = tmp_path / "record.txt"
    s = compat_server("compat_quart:quart_app", env={"COMPAT_RECORD": str(record)})
    try:
        s.start()
        assert httpx.get(f"{s.url}/schedule").text == "scheduled"
        started = time.monotonic()
        log = stop_gracefully(s)
        assert time.monotonic() - started < 5  # Quart waits up to 5 s, the job takes 1
    finally:
        s.stop()
    assert read_lines(record) == ["background job finished"]
    for failure in SHUTDOWN_FAILURES:
        assert failure not in log, log


# 2. Each request runs in an asyncio Task of its own, which ends with the request.


def get_concurrently(url: str, paths: list[str]) -> list[httpx.Response]:
    async def main():
        async with httpx.AsyncClient(base_url=url, timeout=15) as client:
            return await asyncio.gather(*(client.get(p) for p in paths))

    return asyncio.run(main())


def test_done_callback_on_the_request_task_runs_when_the_request_ends():
    """uvicorn runs each request in a Task made for it (loop.create_task per request), so
    a done-callback added to asyncio.current_task() runs as soon as the request ends."""
    with compat_server("compat_tasks:app") as s:
        with httpx.Client(base_url=s.url) as client:  # one keep-alive connection
            for i in range(150):
                path = "/acquire?suspend" if i % 2 else "/acquire"
                assert client.get(path).json() == "acquired"
        paths = ["/acquire?suspend" if i % 2 else "/acquire" for i in range(150)]
        responses = get_concurrently(s.url, paths)
        assert [r.json() for r in responses] == ["acquired"] * 150

        def released():
            return httpx.get(f"{s.url}/held").json() == 0

        assert wait_until(released, timeout=3.0), httpx.get(f"{s.url}/held").json()


@pytest.mark.parametrize("query", ["", "?suspend"])
def test_sequential_requests_run_in_distinct_tasks(query):
    """Two requests one after the other (on one connection, and on new connections) never
    share a Task, and under uvicorn each Task has asyncio's default name, 'Task-N', a new
    N each time."""
    with compat_server("compat_tasks:app") as s:
        with httpx.Client(base_url=s.url) as client:
            reports = [client.get(f"/task{query}").json() for _ in range(5)]
        reports += [httpx.get(f"{s.url}/task{query}").json() for _ in range(5)]
    assert [r["same_as_previous"] for r in reports] == [False] * 10
    names = [r["name"] for r in reports]
    assert len(set(names)) == 10, names
    assert all(re.fullmatch(r"Task-\d+", name) for name in names), names


@pytest.mark.parametrize("query", ["", "?suspend"])
def test_system_exit_in_a_request_ends_only_that_request(query):
    """uvicorn's request cycle catches BaseException: an app raising SystemExit or
    KeyboardInterrupt in a request gets a 500 and the error logged with its traceback,
    and the same process goes on serving."""
    with compat_server("compat_tasks:app") as s:
        pid = httpx.get(f"{s.url}/pid").json()
        for path, error in (("/exit", "SystemExit: 4"), ("/interrupt", "KeyboardInterrupt")):
            assert httpx.get(f"{s.url}{path}{query}").status_code == 500
            s.wait_for_log(error)
            assert httpx.get(f"{s.url}/pid").json() == pid
        log = s.stderr_text()
    assert log.count("Exception in ASGI application") == 2, log
    assert "Task exception was never retrieved" not in log, log
    assert "exited with code" not in log, log


# 3. Tracebacks of errors in requests and at import are logged in full.


def source_line(module: str, marker: str) -> tuple[int, str]:
    """The line number and text of the line of tests/apps/`module` containing `marker`."""
    lines = (APPS_DIR / module).read_text().splitlines()
    number = next(i for i, line in enumerate(lines, 1) if marker in line)
    return number, lines[number - 1].strip()


def assert_traceback(log: str, module: str, line: int, function: str, text: str, error: str):
    assert "Traceback (most recent call last):" in log, log
    assert re.search(rf'File "[^"]*{re.escape(module)}", line {line}, in {function}\n', log), log
    assert f"\n    {text}\n" in log, log
    assert error in log, log


def test_exception_before_the_first_await_is_logged_with_its_traceback():
    """uvicorn logs 'Exception in ASGI application' followed by the whole traceback,
    down to the line that raised, when the app raises before it ever awaits."""
    line, text = source_line("compat_errors.py", "# the raising line")
    with compat_server("compat_errors:app") as s:
        assert httpx.get(f"{s.url}/nobody").status_code == 500
        s.wait_for_log(r"LookupError: no such tenant: nobody")
        log = s.stderr_text()
    assert "Exception in ASGI application" in log
    assert_traceback(
        log, "compat_errors.py", line, "tenant_id", text, "LookupError: no such tenant: nobody"
    )
    caller, caller_text = source_line("compat_errors.py", "tenant = tenant_id(scope)")
    assert_traceback(log, "compat_errors.py", caller, "app", caller_text, "LookupError")


def test_fastapi_endpoint_exception_is_logged_with_its_traceback():
    line, text = source_line("compat_errors.py", "ZeroDivisionError, no await before")
    with compat_server("compat_errors:fastapi_app") as s:
        assert httpx.get(f"{s.url}/orders/7").status_code == 500
        s.wait_for_log(r"ZeroDivisionError: division by zero")
        log = s.stderr_text()
    assert "Exception in ASGI application" in log
    assert_traceback(
        log, "compat_errors.py", line, "order", text, "ZeroDivisionError: division by zero"
    )


def test_import_time_error_prints_the_full_traceback():
    """uvicorn lets an exception raised while importing the app module propagate: Python
    prints its full traceback (at any --log-level) and the process exits with 1. (uvicorn
    exits with 3, STARTUP_FAILURE, only for its own boot errors: module or attribute not
    found, lifespan startup failed.)"""
    line, text = source_line("compat_import_env.py", 'os.environ["APP_SECRET_KEY"]')
    out = run_to_exit("compat_import_env:app", unset=("APP_SECRET_KEY",))
    assert out.returncode == 1, out.stderr
    assert_traceback(
        out.stderr, "compat_import_env.py", line, "<module>", text, "KeyError: 'APP_SECRET_KEY'"
    )


def test_settings_validation_error_at_import_prints_the_full_traceback():
    pytest.importorskip("pydantic_settings")
    line, text = source_line("compat_import_settings.py", "settings = Settings()")
    out = run_to_exit(
        "compat_import_settings:app", unset=("COMPAT_DATABASE_URL", "COMPAT_POOL_SIZE")
    )
    assert out.returncode == 1, out.stderr
    assert_traceback(
        out.stderr,
        "compat_import_settings.py",
        line,
        "<module>",
        text,
        "pydantic_core._pydantic_core.ValidationError: 1 validation error for Settings",
    )
    assert "compat_database_url\n  Field required" in out.stderr, out.stderr


# 4, 5. Streaming responses notice that the client left, even while they wait.


def live_counts(s) -> dict:
    return httpx.get(f"{s.url}/live").json()


def test_starlette_streaming_generators_end_when_their_clients_leave():
    """uvicorn advertises scope["asgi"]["spec_version"] == "2.3" for HTTP (h11_impl.py,
    httptools_impl.py; "2.4" only for WebSockets). Below 2.4 Starlette's
    StreamingResponse also listens for http.disconnect and cancels the stream when it
    comes; from 2.4 on it relies on send() raising instead, which a generator blocked on
    an empty queue never calls, so the generator would stay alive for ever."""
    with compat_server("compat_stream:app") as s:
        clients = []
        for _ in range(3):
            sock = s.connect()
            sock.sendall(b"GET /stream HTTP/1.1\r\nHost: h\r\n\r\n")
            received = b""
            while not received.endswith(b"hello\n\r\n"):  # chunked: "6\r\nhello\n\r\n"
                chunk = sock.recv(4096)
                assert chunk, received
                received += chunk
            assert received.startswith(b"HTTP/1.1 200 OK\r\n")
            clients.append(sock)
        assert live_counts(s)["count"] == 3
        for sock in clients:
            sock.close()
        assert wait_until(lambda: live_counts(s)["count"] == 0), live_counts(s)
        assert live_counts(s)["cleaned_up"] == 3


def test_sse_starlette_generator_is_cleaned_up_when_the_client_leaves():
    pytest.importorskip("sse_starlette")
    with compat_server("compat_sse:app") as s:
        for _ in range(3):
            events = []
            with httpx.stream("GET", f"{s.url}/sse", timeout=10) as r:
                assert r.status_code == 200
                assert r.headers["content-type"].startswith("text/event-stream")
                for line in r.iter_lines():
                    if line.startswith("data: "):
                        events.append(line.removeprefix("data: "))
                    if len(events) == 3:
                        break
            assert events == ["0", "1", "2"]
        assert wait_until(lambda: live_counts(s)["count"] == 0), live_counts(s)
        assert live_counts(s)["cleaned_up"] == 3


# 6. Scope and access log details.


def test_scope_server_over_a_unix_socket(tmp_path):
    """uvicorn gives scope["server"] == (path, None) on a Unix socket (get_local_addr in
    uvicorn/protocols/utils.py: getsockname() is the path) and scope["client"] None."""
    path = str(tmp_path / "compat.sock")
    with compat_server("basic:app", "--uds", path):
        transport = httpx.HTTPTransport(uds=path)
        with httpx.Client(transport=transport, base_url="http://localhost") as client:
            scope = client.get("/scope").json()
    assert scope["server"] == [path, None]
    assert scope["client"] is None


def test_access_log_over_a_unix_socket_has_an_empty_client(tmp_path):
    """With no client address (a Unix socket), uvicorn's access formatter puts "" where
    the client goes, so the line reads 'INFO:      - "GET /x HTTP/1.1" 200 OK'."""
    path = str(tmp_path / "compat.sock")
    with compat_server("basic:app", "--uds", path) as s:
        transport = httpx.HTTPTransport(uds=path)
        with httpx.Client(transport=transport, base_url="http://localhost") as client:
            assert client.get("/count").status_code == 200
        s.wait_for_log(r'"GET /count HTTP/1\.1"', stdout=True)
        assert 'INFO:      - "GET /count HTTP/1.1" 200 OK\n' in s.stdout_text()


def request_scope(s, target: bytes) -> dict:
    with s.connect() as sock:
        reply = raw_exchange(sock, b"GET " + target + b" HTTP/1.1\r\nHost: h\r\n\r\n")
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n"), reply
    return json.loads(body)


def test_a_fragment_in_the_request_target_is_dropped():
    """uvicorn with httptools (its default when installed, as with uvicorn[standard])
    drops a '#fragment' from the request target. (Its h11 implementation passes it on
    in query_string or path.)"""
    with compat_server("basic:app") as s:
        scope = request_scope(s, b"/search?q=1#results")
        assert (scope["path"], scope["raw_path"], scope["query_string"]) == (
            "/search",
            "/search",
            "q=1",
        )
        scope = request_scope(s, b"/search#results")
        assert (scope["path"], scope["raw_path"], scope["query_string"]) == (
            "/search",
            "/search",
            "",
        )


@pytest.mark.parametrize("target", [b"/\xff", b"/search?q=\xff", b"/caf\xc3\xa9"])
def test_non_ascii_bytes_in_the_request_target_get_400(target):
    """uvicorn (h11 and httptools alike) answers 400 and closes to a request target with
    any byte outside ASCII, UTF-8 sequences included."""
    with compat_server("basic:app") as s:
        with s.connect() as sock:
            reply = raw_exchange(sock, b"GET " + target + b" HTTP/1.1\r\nHost: h\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 400 Bad Request\r\n"), reply
    assert reply.endswith(b"<EOF>"), reply


def test_access_log_has_the_reason_phrase_and_the_root_path():
    """uvicorn's access line is '%(levelprefix)s %(client_addr)s - "%(request_line)s"
    %(status_code)s' with the status code followed by its phrase ("200 OK"), on stdout;
    the path it logs is scope["path"], which includes --root-path."""
    with compat_server("basic:app", "--root-path", "/api") as s:
        assert httpx.get(f"{s.url}/count?x=1").status_code == 200
        s.wait_for_log(
            r'(?m)^INFO:     127\.0\.0\.1:\d+ - "GET /api/count\?x=1 HTTP/1\.1" 200 OK$',
            stdout=True,
        )
    with compat_server("compat_tasks:app") as s:
        assert httpx.get(f"{s.url}/nowhere").status_code == 404
        s.wait_for_log(
            r'(?m)^INFO:     127\.0\.0\.1:\d+ - "GET /nowhere HTTP/1\.1" 404 Not Found$',
            stdout=True,
        )


# 7. Large uploads.


def test_fastapi_20mb_multipart_upload():
    pytest.importorskip("python_multipart")
    data = os.urandom(20 * 1024 * 1024)
    with compat_server("compat_upload:app") as s:
        r = httpx.post(
            f"{s.url}/upload",
            files={"file": ("big.bin", data, "application/octet-stream")},
            data={"label": "backup"},
            timeout=60,
        )
    assert r.status_code == 200, r.text
    assert r.http_version == "HTTP/1.1"
    assert r.json() == {
        "filename": "big.bin",
        "label": "backup",
        "size": len(data),
        "md5": hashlib.md5(data).hexdigest(),
    }
