"""HTTP/2 in cleartext (prior knowledge and Upgrade: h2c) against a real server: httpx,
curl, h2load, and the `h2` library on a raw socket for resets and odd header lists.
HTTP/2 over TLS (ALPN) is in test_tls.py."""

import asyncio
import json
import re
import socket
import subprocess
import time

import h2.config
import h2.connection
import h2.events
import httpx
import pytest

from tests.server import Server

APP = "protocols:app"


@pytest.fixture(scope="module")
def server():
    with Server(APP) as s:
        yield s


def h2_client(server) -> httpx.Client:
    return httpx.Client(http1=False, http2=True, base_url=server.url)


class RawH2:
    """A minimal HTTP/2 client on a socket, for what httpx won't send."""

    def __init__(self, server, **settings):
        self.sock = socket.create_connection((server.host, server.port), timeout=5)
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.conn.initiate_connection()
        self.flush()
        self.responses: dict[int, dict] = {}

    def flush(self):
        self.sock.sendall(self.conn.data_to_send())

    def request(self, path: str, extra=(), end=True) -> int:
        stream = self.conn.get_next_available_stream_id()
        headers = [(":method", "GET"), (":scheme", "http"), (":authority", "t"), (":path", path)]
        self.conn.send_headers(stream, headers + list(extra), end_stream=end)
        self.flush()
        return stream

    def pump_until(self, done, timeout: float = 5.0):
        deadline = time.monotonic() + timeout
        while not done():
            assert time.monotonic() < deadline, self.responses
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("server closed the connection")
            for event in self.conn.receive_data(data):
                r = self.responses.setdefault(getattr(event, "stream_id", 0), {"body": b""})
                if isinstance(event, h2.events.ResponseReceived):
                    r["headers"] = dict(event.headers)
                elif isinstance(event, h2.events.DataReceived):
                    r["body"] += event.data
                    self.conn.acknowledge_received_data(event.flow_controlled_length, 1)
                elif isinstance(event, h2.events.StreamEnded):
                    r["ended"] = True
                elif isinstance(event, h2.events.StreamReset):
                    r["reset"] = event.error_code
            self.flush()

    def close(self):
        self.sock.close()


def test_prior_knowledge(server):
    with h2_client(server) as client:
        r = client.get("/scope?q=1")
    assert r.http_version == "HTTP/2"
    scope = r.json()
    assert scope["http_version"] == "2"
    assert scope["scheme"] == "http"
    assert scope["method"] == "GET"
    assert scope["path"] == "/scope"
    assert scope["query_string"] == "q=1"
    names = [name for name, _ in scope["headers"]]
    assert "host" in names  # from :authority, as HTTP/1.1 apps expect
    assert not any(name.startswith(":") for name in names)


def test_core_http_over_h2(server):
    with h2_client(server) as client:
        body = bytes(range(256)) * 20480  # 5 MiB: flow control both ways
        assert client.post("/echo", content=body).content == body
        streamed = client.get("/stream").content
        assert len(streamed) == 80 * 65536 and streamed[65536 * 79] == 79
        head = client.head("/")
        assert head.status_code == 200 and head.content == b""
        assert client.get("/missing").status_code == 404
        assert client.get("/").text == "Hello, world!"


def test_many_concurrent_streams_on_one_connection(server):
    async def main():
        async with httpx.AsyncClient(http1=False, http2=True, base_url=server.url) as client:
            responses = await asyncio.gather(*(client.get(f"/scope?i={i}") for i in range(50)))
        return responses

    responses = asyncio.run(main())
    assert [r.json()["query_string"] for r in responses] == [f"i={i}" for i in range(50)]
    assert all(r.http_version == "HTTP/2" for r in responses)


@pytest.mark.parametrize("flag", ["--http2-prior-knowledge", "--http2"])
def test_curl(server, flag):
    out = subprocess.run(
        ["curl", "-sS", flag, "-w", "\n%{http_version}", f"{server.url}/"],
        capture_output=True,
        text=True,
        timeout=10,
    )
    body, version = out.stdout.rsplit("\n", 1)
    assert (body, version) == ("Hello, world!", "2")


def test_upgrade_with_a_body_is_answered_over_http_1(server):
    out = subprocess.run(
        ["curl", "-sS", "--http2", "--data-binary", "payload", "-w", "\n%{http_version}"]
        + [f"{server.url}/echo"],
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert out.stdout == "payload\n1.1"


def test_h2load(server):
    out = subprocess.run(
        ["h2load", "-n", "2000", "-c", "4", "-m", "10", f"{server.url}/"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert re.search(r"2000 succeeded, 0 failed, 0 errored", out.stdout), out.stdout


@pytest.mark.timeout(30)
def test_stream_reset_disconnects_that_request_only(server):
    client = RawH2(server)
    slow = client.request("/wait-disconnect")
    deadline = time.monotonic() + 5
    while httpx.get(f"{server.url}/record").json().get("wait_disconnect") != "waiting":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    client.conn.reset_stream(slow)
    client.flush()
    normal = client.request("/")
    client.pump_until(lambda: client.responses.get(normal, {}).get("ended"))
    assert client.responses[normal]["headers"][b":status"] == b"200"
    assert client.responses[normal]["body"] == b"Hello, world!"
    while httpx.get(f"{server.url}/record").json().get("wait_disconnect") != "disconnected":
        assert time.monotonic() < deadline + 5
        time.sleep(0.05)
    client.close()


@pytest.mark.timeout(30)
def test_a_reader_that_grants_no_window_holds_the_app_back(server):
    client = RawH2(server)
    client.request("/flood")  # and never acknowledge a byte of it
    time.sleep(1.5)
    sent = httpx.get(f"{server.url}/record").json()["http_flood_sent"]
    # 64 KiB of window plus the 256 KiB send() may queue: a handful of pieces, not 1 GiB.
    assert sent < 16, sent
    client.close()


def test_cookie_fields_are_joined(server):
    client = RawH2(server)
    stream = client.request("/scope", [("cookie", "a=1"), ("x-other", "y"), ("cookie", "b=2")])
    client.pump_until(lambda: client.responses.get(stream, {}).get("ended"))
    headers = json.loads(client.responses[stream]["body"])["headers"]
    assert [v for n, v in headers if n == "cookie"] == ["a=1; b=2"]
    client.close()


def test_limits_are_advertised_and_enforced():
    args = ["--http2-max-concurrent-streams", "5", "--http2-max-header-list-size", "4096"]
    with Server(APP, *args) as s:
        client = RawH2(s)
        client.pump_until(lambda: client.conn.remote_settings.max_concurrent_streams == 5)
        big = client.request("/", [("x-big", "v" * 8000)])
        client.pump_until(lambda: big in client.responses)
        refused = client.responses[big]
        assert "reset" in refused or refused.get("headers", {}).get(b":status") == b"431"
        ok = client.request("/")
        client.pump_until(lambda: client.responses.get(ok, {}).get("ended"))
        assert client.responses[ok]["body"] == b"Hello, world!"
        client.close()


def test_http_1_only_refuses_the_preface():
    with Server(APP, "--http", "1") as s:
        with socket.create_connection((s.host, s.port), timeout=5) as sock:
            sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            answer = sock.recv(1024)
        assert answer.startswith(b"HTTP/1.1 505")
        assert httpx.get(f"{s.url}/").text == "Hello, world!"


def test_http_2_only():
    with Server(APP, "--http", "2") as s:
        with h2_client(s) as client:
            assert client.get("/").http_version == "HTTP/2"
