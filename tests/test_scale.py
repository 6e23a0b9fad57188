"""Many idle connections on one worker (issue #14, item 2; bench/connections.py is the
10,000-connection version with peers side by side).

2,000 idle keep-alive HTTP/1.1 connections (one request each, then silent) and 500
idle WebSockets are held on one worker: the worker's RSS must grow by less than
PER_CONNECTION_KIB per connection, a new client must still be answered promptly, and
once the clients close, the worker must let every connection go (its fd count returns
to where it was).
"""

from __future__ import annotations

import asyncio
import base64
import os
import resource
import socket
import statistics
import time
from pathlib import Path

import pytest

from .server import Server

KEEP_ALIVE = 2_000
WEBSOCKETS = 500
# bench/connections.py at 10,000 on one worker (bench/RESULTS.md, 2026-12-01): ferrocorn
# 18 KiB per idle keep-alive connection and 22 per idle WebSocket, granian 21 and 150,
# uvicorn 8 and 19. The bound is granian's keep-alive figure with room for allocator
# noise at this smaller count; a connection that kept its 64 KiB read buffer resident
# while idle would fail it.
PER_CONNECTION_KIB = 32


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def handshake(kind: str, port: int) -> bytes:
    if kind == "http":
        return b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"
    key = base64.b64encode(os.urandom(16))
    return (
        b"GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )


def answered(kind: str, answer: bytes) -> bool:
    """Whether the whole answer is in: "ok" ends a plain one (or the last chunk, if the
    server chunks it); a 101 ends with its head."""
    if kind == "http":
        return answer.endswith((b"ok", b"\r\n0\r\n\r\n"))
    return b"\r\n\r\n" in answer


async def open_one(kind: str, port: int, gate: asyncio.Semaphore) -> socket.socket:
    """A raw non-blocking socket that made its request (or WebSocket handshake) and got
    the whole answer; cheap enough to hold thousands."""
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setblocking(False)
    async with gate:
        try:
            await loop.sock_connect(sock, ("127.0.0.1", port))
            await loop.sock_sendall(sock, handshake(kind, port))
            answer = b""
            while not answered(kind, answer):
                chunk = await loop.sock_recv(sock, 4096)
                assert chunk, f"closed after {answer!r}"
                answer += chunk
            expected = b"HTTP/1.1 200" if kind == "http" else b"HTTP/1.1 101"
            assert answer.startswith(expected), answer[:80]
        except BaseException:
            sock.close()
            raise
    return sock


async def open_many(kind: str, port: int, n: int) -> list[socket.socket]:
    gate = asyncio.Semaphore(100)
    return list(await asyncio.gather(*(open_one(kind, port, gate) for _ in range(n))))


def request_times(port: int, n: int = 20) -> list[float]:
    """Seconds each of n fresh requests took, on a new connection each."""
    times = []
    for _ in range(n):
        started = time.monotonic()
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            answer = b""
            while chunk := s.recv(4096):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"ok"), answer
        times.append(time.monotonic() - started)
    return times


@pytest.fixture
def fd_limit():
    """Room for the held connections in this process and in the server, which inherits
    the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = KEEP_ALIVE + WEBSOCKETS + 500
    if hard < need:
        pytest.skip(f"hard fd limit {hard} < {need}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_idle_connections_on_one_worker(fd_limit):
    args = ("--timeout-keep-alive", "120", "--ws-ping-interval", "0", "--no-access-log")
    with Server("scale_app:app", *args) as s:
        (worker,) = s.worker_pids()
        # Warm up the paths the held connections take, so their first-use costs (code
        # pages, allocator pools) are not counted per connection.
        socks = asyncio.run(open_many("http", s.port, 100))
        socks += asyncio.run(open_many("ws", s.port, 50))
        for sock in socks:
            sock.close()
        request_times(s.port, 5)
        time.sleep(0.5)
        fds_before = open_fds(worker)
        rss_before = rss_kib(worker)
        baseline = statistics.median(request_times(s.port))

        held = asyncio.run(open_many("http", s.port, KEEP_ALIVE))
        held += asyncio.run(open_many("ws", s.port, WEBSOCKETS))
        try:
            time.sleep(0.5)
            assert open_fds(worker) >= fds_before + KEEP_ALIVE + WEBSOCKETS
            per_connection = (rss_kib(worker) - rss_before) / len(held)
            assert per_connection < PER_CONNECTION_KIB, (
                f"{per_connection:.1f} KiB per idle connection"
            )
            # A new client is answered as promptly as before (loose: the machine is
            # shared while tests run).
            during = statistics.median(request_times(s.port))
            assert during < max(0.05, baseline * 5), (baseline, during)
        finally:
            for sock in held:
                sock.close()

        deadline = time.monotonic() + 10
        while open_fds(worker) > fds_before + 5 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert open_fds(worker) <= fds_before + 5, (
            f"{open_fds(worker) - fds_before} connections still open after the clients left"
        )
        # And the worker still serves.
        assert len(request_times(s.port, 3)) == 3
        print(
            f"{per_connection:.1f} KiB per idle connection, {baseline * 1e3:.1f} -> "
            f"{during * 1e3:.1f} ms per new request"
        )
