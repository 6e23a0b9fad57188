"""Limits and framing rules: each refused request gets one precise status, the
connection closes, and nothing smuggled behind it is ever served."""

import time

import httpx
import pytest

from tests.server import Server, raw_exchange


@pytest.fixture(scope="module")
def server():
    with Server(
        "basic:app",
        "--limit-request-line",
        "200",
        "--limit-request-fields",
        "10",
        "--limit-request-field-size",
        "300",
        "--timeout-request-header",
        "2",
        "--timeout-keep-alive",
        "1",
    ) as s:
        yield s


def served_count(server) -> int:
    return int(httpx.get(f"{server.url}/count").text)


def post(*fields: str, body: bytes = b"") -> bytes:
    """A POST /echo head with these extra fields, then `body`."""
    lines = ["POST /echo HTTP/1.1", "Host: h", *fields, "", ""]
    return "\r\n".join(lines).encode() + body


CHUNKED = "Transfer-Encoding: chunked"


@pytest.mark.parametrize(
    "request_bytes, status",
    [
        (b"GET /" + b"a" * 300 + b" HTTP/1.1\r\nHost: h\r\n\r\n", 414),
        (post(*(f"X-{i}: v" for i in range(12))), 431),
        (post("X-Big: " + "v" * 400), 431),
        (post("Content-Length: 3", "Content-Length: 3", body=b"abc"), 400),
        (post("Content-Length: 3", "Content-Length: 4", body=b"abc"), 400),
        (post("Content-Length: 5", CHUNKED, body=b"0\r\n\r\n"), 400),
        (post(CHUNKED, CHUNKED, body=b"0\r\n\r\n"), 400),
        (post("Content-Length: -1"), 400),
        (post("Transfer-Encoding: gzip, chunked"), 501),
        (b"GET / HTTP/1.1\r\n\r\n", 400),
        (b"GET / HTTP/3.0\r\nHost: h\r\n\r\n", 505),
        (post(CHUNKED, body=b"0x3\r\nabc\r\n0\r\n\r\n"), 400),
    ],
)
def test_refused_requests_never_smuggle(server, request_bytes, status):
    smuggled = b"GET /count HTTP/1.1\r\nHost: h\r\n\r\n"
    before = served_count(server)
    with server.connect() as sock:
        raw = raw_exchange(sock, request_bytes + smuggled)
    assert raw.startswith(b"HTTP/1.1 %d " % status), raw[:100]
    assert raw.count(b"HTTP/1.1 ") == 1  # exactly one response
    assert b"connection: close" in raw.lower()
    assert raw.endswith(b"<EOF>")
    # Nothing behind the bad request ran: only our own /count calls were served.
    assert served_count(server) == before + 1


def test_200kb_header_is_refused():
    with Server("basic:app") as s, s.connect() as sock:
        raw = raw_exchange(
            sock, b"GET / HTTP/1.1\r\nHost: h\r\nX-Big: " + b"a" * 200_000 + b"\r\n\r\n"
        )
    assert raw.startswith(b"HTTP/1.1 431 ")


def test_keep_alive_timeout_closes_idle_connection(server):
    with server.connect() as sock:
        sock.sendall(b"GET /count HTTP/1.1\r\nHost: h\r\n\r\n")
        sock.recv(4096)
        start = time.monotonic()
        sock.settimeout(5)
        assert sock.recv(4096) == b""  # the server closed the idle connection
        assert 0.5 < time.monotonic() - start < 3


def test_header_read_timeout_cuts_slow_clients(server):
    with server.connect() as sock:
        start = time.monotonic()
        sock.settimeout(8)
        closed = False
        for byte in b"GET / HTTP/1.1\r\nHost: h\r\nX-Slow: aaaaaaaaaa":
            try:
                sock.sendall(bytes([byte]))
                time.sleep(0.25)
            except OSError:
                closed = True
                break
        if not closed:
            closed = sock.recv(4096) == b""
        assert closed
        assert time.monotonic() - start < 6


def test_limit_concurrency_answers_503():
    with Server("basic:app", "--limit-concurrency", "1") as s:
        with s.connect() as slow:
            slow.sendall(b"GET /slow?1 HTTP/1.1\r\nHost: h\r\n\r\n")
            time.sleep(0.3)
            r = httpx.get(f"{s.url}/count")
            assert r.status_code == 503
            slow.settimeout(5)
            assert slow.recv(4096).startswith(b"HTTP/1.1 200 OK")
        assert httpx.get(f"{s.url}/count").status_code == 200
