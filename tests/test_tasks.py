"""What a request sees of asyncio, whichever way ferrocorn runs it: in a Task of its
own (the default, started eagerly on Python 3.12+; `--task-impl create-task`, made by
`loop.create_task` on every version; also when the app installed a task factory) or
inline in a long-lived runner Task (`--task-impl runner`). Contextvars, `asyncio.current_task()`
and cancellation must behave as with a Task per request (python/ferrocorn/_requests.py);
done-callbacks and Task names only with the default."""

import asyncio
import re
import sys
import time

import httpx
import pytest

from tests.server import Server


@pytest.fixture(scope="module", params=["task", "create-task", "runner", "task factory"])
def server(request):
    env = {"FERROCORN_TEST_TASK_FACTORY": "1"} if request.param == "task factory" else {}
    args = ["--task-impl", request.param] if request.param != "task factory" else []
    with Server("tasks_app:app", *args, env=env) as s:
        yield s


@pytest.fixture(scope="module")
def default_server():
    with Server("tasks_app:app") as s:
        yield s


@pytest.mark.parametrize("impl", ["task", "create-task"])
def test_a_request_task_starts_eagerly_on_python_312_by_default(impl):
    """The default starts each request's Task eagerly where asyncio can (3.12+: it saves
    the loop turn before the first step); `--task-impl create-task` never does, and
    neither does the default once the app installed a task factory (it must see every
    request's Task made through it)."""
    with Server("tasks_app:app", "--task-impl", impl) as s:
        eager = httpx.get(f"{s.url}/eager").json()
    assert eager is (impl == "task" and sys.version_info >= (3, 12))
    with Server("tasks_app:app", env={"FERROCORN_TEST_TASK_FACTORY": "1"}) as s:
        before = httpx.get(f"{s.url}/factory-count").json()
        assert httpx.get(f"{s.url}/eager").json() is False
        after = httpx.get(f"{s.url}/factory-count").json()
        assert after - before >= 2  # the /eager request and the count request itself


def test_each_request_has_a_task_of_its_own_named_as_uvicorns(default_server):
    with httpx.Client(base_url=default_server.url) as client:  # one connection
        names = [client.get("/task-name").json() for _ in range(20)]
    assert len(set(names)) == 20
    assert all(re.fullmatch(r"Task-\d+", name) for name in names), names


def test_a_done_callback_runs_when_its_request_ends(default_server):
    with httpx.Client(base_url=default_server.url) as client:
        for i in range(150):
            assert client.get(f"/acquire?{i}").status_code == 200
    responses = get_all(default_server, ["/acquire", "/acquire?sleep"] * 75)
    assert [r.status_code for r in responses] == [200] * 150
    deadline = time.monotonic() + 3
    while (held := httpx.get(f"{default_server.url}/held").json()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert held == 0


def get_all(server, paths):
    """The responses to `paths`, all sent at once on separate connections."""

    async def main():
        async with httpx.AsyncClient(base_url=server.url, timeout=15) as client:
            return await asyncio.gather(*(client.get(p) for p in paths))

    return asyncio.run(main())


def test_each_request_starts_in_a_fresh_context(server):
    with httpx.Client(base_url=server.url) as client:  # one connection, one worker
        for i in range(30):
            r = client.get(f"/ctx?r{i}")
            assert r.status_code == 200
            assert r.json() == {"seen": None, "after": f"r{i}", "app_wide": "set at import"}


def test_concurrent_requests_keep_their_own_context_across_suspensions(server):
    responses = get_all(server, [f"/ctx?sleep{i}" for i in range(20)])
    for i, r in enumerate(responses):
        assert r.status_code == 200
        assert r.json() == {"seen": None, "after": f"sleep{i}", "app_wide": "set at import"}


def test_requests_in_flight_together_each_have_their_own_task(server):
    n = 20
    responses = get_all(server, [f"/gather?{n}"] * n)  # each waits for all the others
    assert [r.status_code for r in responses] == [200] * n
    reports = [r.json() for r in responses]
    assert all(report["same_task_after"] for report in reports)
    assert len({report["task"] for report in reports}) == n


def test_a_cancellation_stays_with_the_request_it_was_meant_for(server):
    with httpx.Client(base_url=server.url) as client:
        for _ in range(5):
            # Cancelled, but returned before the cancellation could be delivered.
            assert client.get("/cancel-self").json() == "asked"
            assert client.get("/ctx?next").json()["seen"] is None
            # Cancelled and swallowed it.
            assert client.get("/swallow-cancel").json() == "cancelled"
            r = client.get("/timeouts")  # waits that a stray cancellation would break
            assert r.json() == ["asyncio timed out", "anyio moved on", "slept after"]
    # Requests that arrive together with cancelled ones, and then suspend.
    paths = [p for i in range(15) for p in ("/cancel-self", f"/ctx?sleep{i}")]
    for path, r in zip(paths, get_all(server, paths), strict=True):
        assert r.status_code == 200, path
        if path.startswith("/ctx"):
            assert r.json()["after"] == path.split("?")[1]


def test_an_apps_task_factory_sees_every_request():
    with Server("tasks_app:app", env={"FERROCORN_TEST_TASK_FACTORY": "1"}) as s:
        before = httpx.get(f"{s.url}/factory-count").json()
        get_all(s, ["/ctx?x"] * 10)
        after = httpx.get(f"{s.url}/factory-count").json()
        assert after - before >= 11  # the ten and the count request itself
