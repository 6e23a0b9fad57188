"""Drains that lose nothing (issue 13): restarts and recycling under load from
persistent HTTP/1.1 and HTTP/2 connections that never retry, counted request by
request; the drain's behaviour on the wire; per-connection bounds; worker lifetime and
RSS recycling."""

from __future__ import annotations

import signal
import socket
import sys
import time
from pathlib import Path

import pytest

from tests.server import Server, run_to_exit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from restart_load import H2Connection, Tally, run_load  # noqa: E402

NO_LOG = "--no-access-log"


def drain_server(*args: str, startup: float = 5.0) -> Server:
    return Server("drain_app:app", NO_LOG, *args, env={"DRAIN_APP_STARTUP": str(startup)})


def wait_until(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"{what} did not happen within {timeout}s")


def assert_lost_nothing(result: dict) -> None:
    for protocol, tally in result.items():
        assert tally["failed"] == 0, (protocol, tally)
        assert tally["ok"] > 200, (protocol, tally)
    # The drain asked the clients to reconnect (connection: close / GOAWAY) instead of
    # closing under them.
    assert result["http1"]["closes_announced"] > 0, result
    assert result["http2"]["closes_announced"] > 0, result


@pytest.mark.timeout(60)
@pytest.mark.parametrize("workers", [1, 2])
def test_hup_under_keep_alive_load_loses_nothing(workers):
    with drain_server("--workers", str(workers), startup=5.0).start(timeout=30) as s:
        old = s.wait_for_workers(workers)

        def hup_and_wait():
            time.sleep(0.5)
            s.signal(signal.SIGHUP)
            # The 5 s lifespan startup of each replacement, one at a time.
            s.wait_for_workers(workers, exclude=old, timeout=10 + 7 * workers)
            time.sleep(1)

        result = run_load(s.host, s.port, http1=6, http2=3, duration=3, during=hup_and_wait)
        assert_lost_nothing(result)
        assert s.stderr_text().count("(cause: hup)") == workers


@pytest.mark.timeout(60)
@pytest.mark.parametrize("workers", [1, 2])
def test_max_requests_recycling_under_load_loses_nothing(workers):
    with drain_server("--workers", str(workers), "--max-requests", "400", startup=5.0).start(
        timeout=30
    ) as s:
        old = s.wait_for_workers(workers)

        def until_recycled():
            wait_until(
                lambda: (
                    len(s.worker_pids() - old) >= workers
                    and s.stderr_text().count("ready [") > workers + 1
                ),
                25,
                "recycling",
            )
            time.sleep(1)

        result = run_load(s.host, s.port, http1=6, http2=3, duration=3, during=until_recycled)
        assert_lost_nothing(result)
        assert "(cause: max-requests)" in s.stderr_text()


def read_response(sock: socket.socket, timeout: float = 5.0) -> bytes:
    """One response with a Content-Length body; b"" if the server closed first."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(
        next(
            line.split(b":", 1)[1]
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
    )
    while len(body) < length:
        body += sock.recv(65536)
    return head


def closed_by_server(sock: socket.socket, timeout: float) -> bool:
    sock.settimeout(timeout)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


GET = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


def test_drain_answers_idle_keep_alive_connections_then_closes_silent_ones():
    with drain_server("--drain-idle-grace", "1.5", startup=0) as s:
        busy, silent = s.connect(), s.connect()
        for sock in (busy, silent):
            sock.sendall(GET)
            assert b"connection: close" not in read_response(sock).lower()
        term_at = time.monotonic()
        s.signal(signal.SIGTERM)
        time.sleep(0.5)
        # Idle when the drain began, the connection still gets its next request
        # answered, and told that it is the last.
        busy.sendall(GET)
        head = read_response(busy).lower()
        assert head.startswith(b"http/1.1 200"), head
        assert b"connection: close" in head
        assert closed_by_server(busy, 2)
        # The one that stayed silent is closed at the end of the window, not before.
        assert closed_by_server(silent, 5)
        assert 1.2 < time.monotonic() - term_at < 4.5
        assert s.wait(15) == 0


def test_response_in_flight_when_the_drain_starts_says_connection_close():
    with drain_server(startup=0) as s:
        sock = s.connect()
        sock.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.3)
        s.signal(signal.SIGTERM)
        head = read_response(sock).lower()
        assert head.startswith(b"http/1.1 200")
        assert b"connection: close" in head


def test_a_connection_accepted_but_not_yet_read_is_answered_on_drain():
    with drain_server("--drain-idle-grace", "0", startup=0) as s:
        sock = s.connect()
        time.sleep(0.3)  # accepted by the worker, nothing sent yet
        s.signal(signal.SIGTERM)
        time.sleep(0.3)
        sock.sendall(GET)
        head = read_response(sock).lower()
        assert head.startswith(b"http/1.1 200"), head
        assert b"connection: close" in head


def test_max_requests_per_connection_http1():
    with drain_server("--max-requests-per-connection", "3", startup=0) as s:
        sock = s.connect()
        heads = []
        for _ in range(3):
            sock.sendall(GET)
            heads.append(read_response(sock).lower())
        assert [b"connection: close" in h for h in heads] == [False, False, True]
        assert all(h.startswith(b"http/1.1 200") for h in heads)
        assert closed_by_server(sock, 2)


def h2_requests(s: Server, count: int, pause: float = 0.0) -> tuple[Tally, H2Connection]:
    """Send `count` requests one after the other on one HTTP/2 connection."""
    tally = Tally()
    conn = H2Connection(s.host, s.port, "/", tally)
    for _ in range(count):
        if conn.going_away:
            break
        conn.send_request()
        while conn.open:
            assert conn.read_frames()
        time.sleep(pause)
    return tally, conn


def test_max_requests_per_connection_http2_sends_a_graceful_goaway():
    with drain_server("--max-requests-per-connection", "3", startup=0) as s:
        tally, conn = h2_requests(s, 5)
        wait_until(lambda: conn.going_away or not conn.read_frames(), 3, "GOAWAY")
        assert conn.going_away
        assert tally.ok == 3 and tally.failed == 0
        # The server closes once the graceful GOAWAY is done (after our PING answer).
        wait_until(lambda: not conn.read_frames(), 3, "close")
        assert tally.failed == 0


def test_max_connection_age_http1_and_http2():
    with drain_server(
        "--max-connection-age", "1", "--max-connection-age-jitter", "0.5", startup=0
    ) as s:
        sock = s.connect()
        sock.sendall(GET)
        assert b"connection: close" not in read_response(sock).lower()
        time.sleep(1.7)
        sock.sendall(GET)
        assert b"connection: close" in read_response(sock).lower()

        tally, conn = h2_requests(s, 1)
        started = time.monotonic()
        wait_until(lambda: conn.going_away or not conn.read_frames(), 4, "GOAWAY")
        assert conn.going_away
        assert 0.5 < time.monotonic() - started < 3.5
        assert tally.ok == 1 and tally.failed == 0


def test_connection_bound_options_are_checked():
    for args in (
        ("--max-connection-age", "0"),
        ("--max-requests-per-connection", "0"),
        ("--workers-max-rss", "0"),
        ("--drain-idle-grace=-1",),
        ("--workers-lifetime", "nan"),
        ("--workers-max-rss-interval", "0"),
    ):
        done = run_to_exit("drain_app:app", *args)
        assert done.returncode == 2, (args, done.stderr)
        assert args[0].split("=")[0] in done.stderr


@pytest.mark.timeout(60)
def test_rss_recycling_replaces_a_growing_worker_and_loses_nothing():
    # A fresh worker holds some tens of MiB; 12 requests to /hoard add 96 MiB.
    with drain_server(
        "--workers",
        "2",
        "--workers-max-rss",
        "120",
        "--rss-samples",
        "2",
        "--workers-max-rss-interval",
        "1",
        startup=0,
    ) as s:
        old = s.wait_for_workers(2)

        def grow_one_worker():
            sock = s.connect()
            for _ in range(14):
                sock.sendall(b"GET /hoard HTTP/1.1\r\nHost: x\r\n\r\n")
                read_response(sock)
            sock.close()
            wait_until(lambda: "(cause: rss)" in s.stderr_text(), 15, "RSS recycling")
            wait_until(
                lambda: len(s.worker_pids() - old) >= 1 and len(s.worker_pids()) == 2,
                15,
                "replacement",
            )
            time.sleep(1)

        result = run_load(s.host, s.port, http1=4, http2=2, duration=3, during=grow_one_worker)
        for protocol, tally in result.items():
            assert tally["failed"] == 0, (protocol, tally)
        log = s.stderr_text()
        assert "over --workers-max-rss 120 MiB" in log
        # Only the worker that grew was replaced.
        assert log.count("(cause: rss)") == 1, log
        assert len(s.worker_pids() & old) == 1


@pytest.mark.timeout(60)
def test_workers_lifetime_recycles_rolling_and_loses_nothing():
    with drain_server(
        "--workers", "2", "--workers-lifetime", "2", "--workers-lifetime-jitter", "1", startup=0
    ) as s:
        old = s.wait_for_workers(2)

        def until_two_replaced():
            wait_until(
                lambda: not (s.worker_pids() & old) and len(s.worker_pids()) == 2, 20, "lifetime"
            )
            time.sleep(0.5)

        result = run_load(s.host, s.port, http1=4, http2=2, duration=3, during=until_two_replaced)
        for protocol, tally in result.items():
            assert tally["failed"] == 0, (protocol, tally)
            assert tally["ok"] > 100
        assert s.stderr_text().count("(cause: lifetime)") >= 2


def test_http2_client_that_never_answers_the_goaway_ping_cannot_hold_the_drain():
    with drain_server(startup=0) as s:
        tally, conn = h2_requests(s, 1)
        assert tally.ok == 1
        term_at = time.monotonic()
        s.signal(signal.SIGTERM)
        # We read nothing (so the server's PING goes unanswered) until the server is done.
        assert s.wait(10) == 0
        stopped_after = time.monotonic() - term_at
        assert stopped_after < 6, stopped_after
        while conn.read_frames():
            pass
        assert conn.going_away
        assert tally.failed == 0
