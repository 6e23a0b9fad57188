"""Limits and framing rules: each refused request gets one precise status, the
connection closes, and nothing smuggled behind it is ever served."""

import os
import socket
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


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def test_slow_reader_keeps_worker_memory_bounded():
    with Server("basic:app") as s:
        (worker,) = s.worker_pids()
        baseline = rss_mb(worker)
        with s.connect() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.sendall(b"GET /huge HTTP/1.1\r\nHost: h\r\n\r\n")
            time.sleep(3)  # the app would have produced 100 MB by now without backpressure
            grown = rss_mb(worker) - baseline
            assert grown < 20, f"worker grew {grown:.1f} MB for a client that doesn't read"
            # The same worker still serves others meanwhile.
            assert httpx.get(f"{s.url}/count", timeout=5).status_code == 200


def test_worker_connections_cap_refuses_cleanly():
    with Server("basic:app", "--worker-connections", "2") as s:
        held = [s.connect(), s.connect()]
        for sock in held:
            sock.sendall(b"GET /count HTTP/1.1\r\nHost: h\r\n\r\n")
            assert sock.recv(4096).startswith(b"HTTP/1.1 200 OK")
        with s.connect() as third:
            raw = raw_exchange(third, b"GET /count HTTP/1.1\r\nHost: h\r\n\r\n")
        assert raw.startswith(b"HTTP/1.1 503 ") and raw.endswith(b"<EOF>")
        for sock in held:
            sock.close()
        time.sleep(0.2)
        assert httpx.get(f"{s.url}/count").status_code == 200


def test_stalled_request_body_times_out():
    with Server("basic:app", "--timeout-request-body", "1") as s:
        # Before the app is called: 408.
        with s.connect() as sock:
            raw = raw_exchange(
                sock, b"POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\n", wait=3
            )
        assert raw.startswith(b"HTTP/1.1 408 ")
        # After the app started reading: the app sees a disconnect, the client a 408.
        with s.connect() as sock:
            start = time.monotonic()
            raw = raw_exchange(
                sock, b"POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nabc", wait=3
            )
        assert raw.startswith(b"HTTP/1.1 408 ") and raw.endswith(b"<EOF>")
        assert time.monotonic() - start < 3
