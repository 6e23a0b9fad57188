"""uvicorn compatibility (issue #11): behaviours that real apps and libraries rely on.

Each test describes what uvicorn 0.54 does (checked by running the same app under
`python -m uvicorn`; see tests/compat.py to rerun them that way) and asserts it of
ferrocorn.
"""

import asyncio
import re
import signal
import time

import httpx
import pytest

from tests.compat import compat_server, read_lines, run_to_exit, wait_until

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
    record = tmp_path / "record.txt"
    s = compat_server("compat_lifespan:litestar_app", env={"COMPAT_RECORD": str(record)})
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
    record = tmp_path / "record.txt"
    s = compat_server("compat_lifespan:quart_app", env={"COMPAT_RECORD": str(record)})
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


# 3. Tracebacks of errors in requests and at import are logged in full.


def source_line(module: str, marker: str) -> tuple[int, str]:
    """The line number and text of the line of tests/apps/`module` containing `marker`."""
    from tests.server import APPS_DIR

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
