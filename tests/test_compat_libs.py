"""uvicorn compatibility (issue #11): real libraries that hook into asyncio, contextvars
and the ASGI flow, on a real server (tests/apps/compat_libs.py). Each one is skipped when
its package isn't installed."""

import asyncio
import json
import uuid

import httpx
import pytest

from tests.compat import compat_server, read_lines, wait_until


def get_concurrently(url: str, paths: list[str], headers=None) -> list[httpx.Response]:
    async def main():
        limits = httpx.Limits(max_connections=len(paths))
        async with httpx.AsyncClient(base_url=url, timeout=20, limits=limits) as client:
            return await asyncio.gather(
                *(client.get(p, headers=(headers or {}).get(p)) for p in paths)
            )

    return asyncio.run(main())


def test_sqlalchemy_async_sessions_under_50_concurrent_requests(tmp_path):
    pytest.importorskip("sqlalchemy")
    pytest.importorskip("aiosqlite")
    pytest.importorskip("greenlet")  # sqlalchemy[asyncio]
    env = {"COMPAT_DB": str(tmp_path / "items.db")}
    with compat_server("compat_libs:sqlalchemy_app", "--factory", env=env) as s:
        ids = [1 + (i * 7) % 100 for i in range(50)]
        responses = get_concurrently(s.url, [f"/items/{i}" for i in ids])
        assert [r.status_code for r in responses] == [200] * 50
        assert [r.json() for r in responses] == [
            {"id": i, "name": f"item-{i}", "of": 100} for i in ids
        ]
        assert httpx.get(f"{s.url}/items/1000").status_code == 404


def test_opentelemetry_asgi_middleware_one_server_span_per_request(tmp_path):
    pytest.importorskip("opentelemetry.instrumentation.asgi")
    pytest.importorskip("opentelemetry.sdk")
    spans_file = tmp_path / "spans.jsonl"
    env = {"COMPAT_SPANS": str(spans_file)}
    with compat_server("compat_libs:otel_app", "--factory", env=env) as s:
        with httpx.Client(base_url=s.url) as client:
            for name in ("ann", "bob", "cy"):
                assert client.get(f"/hello/{name}").text == f"hello {name}"
            assert client.get("/missing").status_code == 404
        paths = [f"/hello/p{i}" for i in range(10)]
        assert [r.text for r in get_concurrently(s.url, paths)] == [
            f"hello p{i}" for i in range(10)
        ]

        def server_spans():
            spans = [json.loads(line) for line in read_lines(spans_file)]
            return [span for span in spans if span["kind"] == "SERVER"]

        assert wait_until(lambda: len(server_spans()) == 14), server_spans()
    spans = server_spans()
    targets = sorted(span["attributes"]["http.target"] for span in spans)
    expected = ["/hello/ann", "/hello/bob", "/hello/cy", "/missing", *paths]
    assert targets == sorted(expected)
    for span in spans:
        status = 404 if span["attributes"]["http.target"] == "/missing" else 200
        assert span["attributes"]["http.status_code"] == status, span
        assert span["name"] == f"GET {span['attributes']['http.target']}"
        assert span["parent"] is None
    assert len({span["trace_id"] for span in spans}) == 14  # a trace per request


def test_sentry_captures_one_event_with_the_stack_trace(tmp_path):
    pytest.importorskip("sentry_sdk")
    events_file = tmp_path / "events.jsonl"
    env = {"COMPAT_EVENTS": str(events_file)}
    with compat_server("compat_libs:sentry_app", "--factory", env=env) as s:
        assert httpx.get(f"{s.url}/charge/5").json() == {"charged": 5}
        assert httpx.get(f"{s.url}/charge/500").status_code == 500
        assert wait_until(lambda: read_lines(events_file)), "no event captured"
        assert httpx.get(f"{s.url}/charge/6").json() == {"charged": 6}
    events = [json.loads(line) for line in read_lines(events_file)]
    assert len(events) == 1, events
    (exception,) = events[0]["exception"]["values"]
    assert exception["type"] == "RuntimeError"
    assert exception["value"] == "amount 500 over the limit"
    frames = exception["stacktrace"]["frames"]
    assert frames[-1]["function"] == "charge"
    assert frames[-1]["filename"].endswith("compat_libs.py")
    assert (
        frames[-1]["context_line"].strip()
        == 'raise RuntimeError(f"amount {amount} over the limit")'
    )
    assert events[0]["request"]["url"].endswith("/charge/500")


def test_structlog_contextvars_do_not_leak_between_requests(tmp_path):
    pytest.importorskip("structlog")
    log_file = tmp_path / "log.jsonl"
    env = {"COMPAT_LOG": str(log_file)}
    with compat_server("compat_libs:structlog_app", "--factory", env=env) as s:
        # Sequentially on one connection, then all at once.
        with httpx.Client(base_url=s.url) as client:
            for i in range(20):
                rid = f"seq-{i}"
                path = f"/login/u{i}" if i % 2 else "/anonymous"
                seen = client.get(path, headers={"x-request-id": rid}).json()
                assert seen == (
                    {"request_id": rid, "user": f"u{i}"} if i % 2 else {"request_id": rid}
                )
        paths = [f"/login/c{i}" if i % 2 else f"/anonymous?{i}" for i in range(40)]
        headers = {p: {"x-request-id": f"con-{uuid.uuid4()}"} for p in paths}
        responses = get_concurrently(s.url, paths, headers)
        for path, r in zip(paths, responses, strict=True):
            rid = headers[path]["x-request-id"]
            if path.startswith("/login/"):
                assert r.json() == {"request_id": rid, "user": path.rsplit("/", 1)[1]}
            else:
                assert r.json() == {"request_id": rid}
    lines = [json.loads(line) for line in read_lines(log_file)]
    assert len(lines) == 60
    for line in lines:
        if line["event"] == "anonymous visit":
            assert set(line) == {"event", "level", "request_id"}, line
        else:
            assert set(line) == {"event", "level", "request_id", "user"}, line
