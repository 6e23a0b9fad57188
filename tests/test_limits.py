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
        "--limit-request-line", "200",
        "--limit-request-fields", "10",
        "--limit-request-field-size", "300",
        "--timeout-request-header", "2",
        "--timeout-keep-alive", "1",
    ) as s:
        yield s


def served_count(server) -> int:
    return int(httpx.get(f"{server.url}/count").text)


@pytest.mark.parametrize(
    "request_bytes, status",
    [
        (b"GET /" + b"a" * 300 + b" HTTP/1.1\r\nHost: h\r\n\r\n", 414),
        (b"GET / HTTP/1.1\r\nHost: h\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(12)) + b"\r\n", 431),
        (b"GET / HTTP/1.1\r\nHost: h\r\nX-Big: " + b"v" * 400 + b"\r\n\r\n", 431),
        (b"POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc", 400),
        (b"POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabc", 400),
        (b"POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
        (b"POST /echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
        (b"POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n", 400),
        (b"POST /echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
        (b"GET / HTTP/1.1\r\n\r\n", 400),
        (b"GET / HTTP/3.0\r\nHost: h\r\n\r\n", 505),
        (b"POST /echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0x3\r\nabc\r\n0\r\n\r\n", 400),
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
        raw = raw_exchange(sock, b"GET / HTTP/1.1\r\nHost: h\r\nX-Big: " + b"a" * 200_000 + b"\r\n\r\n")
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
