"""App failures: 500 before the response starts, a closed connection after, a logged
error naming a bad message, and the worker keeps serving."""

import httpx
import pytest

from tests.server import Server, raw_exchange


@pytest.fixture(scope="module", params=["task", "create-task", "runner"])
def server(request):
    with Server("basic:app", "--task-impl", request.param) as s:
        yield s


def test_exception_before_start_is_500_with_traceback(server):
    # Raised before the app's first await: the traceback still shows where (it was cut
    # to one line on 3.11 when the first step ran outside a Task).
    r = httpx.get(f"{server.url}/raise_before")
    assert r.status_code == 500
    server.wait_for_log(
        r"Exception in ASGI application\nTraceback \(most recent call last\):[\s\S]*"
        r"basic\.py\", line \d+, in raise_before[\s\S]*ValueError: boom before start"
    )


def test_exception_after_start_closes_connection(server):
    with server.connect() as sock:
        raw = raw_exchange(sock, b"GET /raise_after HTTP/1.1\r\nHost: h\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 200 OK")
    assert b"partial" in raw
    assert not raw.replace(b"<EOF>", b"").endswith(b"0\r\n\r\n")  # never looks complete
    assert raw.endswith(b"<EOF>")
    server.wait_for_log("boom after start")


def test_returning_without_response_is_500(server):
    r = httpx.get(f"{server.url}/no_response")
    assert r.status_code == 500
    server.wait_for_log("ASGI callable returned without starting response")


@pytest.mark.parametrize(
    "path, logged",
    [
        ("bad_message", "Unexpected ASGI message 'http.response.bogus'"),
        ("bad_status", "Invalid status in http.response.start"),
        ("bad_header", "Invalid value for header"),
    ],
)
def test_invalid_messages_are_logged_and_answered_500(server, path, logged):
    r = httpx.get(f"{server.url}/{path}")
    assert r.status_code == 500
    server.wait_for_log(logged)
    assert httpx.get(f"{server.url}/count").status_code == 200


def test_body_shorter_than_content_length_closes(server):
    with server.connect() as sock:
        raw = raw_exchange(
            sock,
            b"GET /short_body HTTP/1.1\r\nHost: h\r\n\r\nGET /count HTTP/1.1\r\nHost: h\r\n\r\n",
        )
    assert raw == raw.split(b"\r\n\r\n")[0] + b"\r\n\r\n12345<EOF>"
    server.wait_for_log("Response content shorter than Content-Length")


def test_body_longer_than_content_length_is_cut_and_closes(server):
    with server.connect() as sock:
        raw = raw_exchange(
            sock,
            b"GET /long_body HTTP/1.1\r\nHost: h\r\n\r\nGET /count HTTP/1.1\r\nHost: h\r\n\r\n",
        )
    # Exactly the declared 2 bytes, then the connection ends: no desynchronised stream.
    assert raw.endswith(b"\r\n\r\n12<EOF>")
    assert raw.count(b"HTTP/1.1 ") == 1
    server.wait_for_log("Response content longer than Content-Length")


def test_worker_survives_everything_above(server):
    assert "panicked" not in server.stderr_text()
    assert server.proc.poll() is None
