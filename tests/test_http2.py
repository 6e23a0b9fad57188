"""HTTP/2 in cleartext (prior knowledge and Upgrade: h2c) against a real server: httpx,
curl, h2load, and the `h2` library (or bare frames) on a raw socket for flow control,
resets, limits and odd header lists. HTTP/2 over TLS (ALPN) is in test_tls.py."""

import asyncio
import json
import os
import re
import socket
import subprocess
import time

import h2.config
import h2.connection
import h2.events
import hpack
import httpx
import hyperframe.frame as hf
import pytest

from tests.core_checks import SEND_CHECKS, SHARED_CHECKS
from tests.server import Server, raw_exchange, run_to_exit

APP = "proto_app:app"
HELLO = b"Hello, world!"
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
MiB = 1024 * 1024
STREAM_BODY = b"".join(bytes([i]) * 65536 for i in range(80))  # what /stream sends


@pytest.fixture(scope="module")
def server():
    # One worker: /record reads what the handlers of earlier requests wrote.
    with Server(APP, "--workers", "1") as s:
        yield s


@pytest.fixture
def client(server):
    with httpx.Client(http1=False, http2=True, base_url=server.url, timeout=30) as c:
        yield c


def record(server) -> dict:
    return httpx.get(f"{server.url}/record").json()


def wait_record(server, key: str, value, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while (seen := record(server).get(key)) != value:
        assert time.monotonic() < deadline, f"/record {key}={seen!r}, expected {value!r}"
        time.sleep(0.02)


class RawH2:
    """A minimal HTTP/2 client on a socket (the `h2` state machine), for what httpx
    won't do: reset a stream, hold back window updates, repeat a header field."""

    def __init__(self, server, sock: socket.socket | None = None, upgraded: bool = False):
        self.sock = sock or socket.create_connection((server.host, server.port), timeout=10)
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        if not upgraded:
            self.conn.initiate_connection()
            self.flush()
        self.responses: dict[int, dict] = {}
        self.settings_seen = False
        self.ack = True  # give the window back as data arrives
        self.unacked: dict[int, int] = {}

    def flush(self):
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def request(self, path: str, extra=(), method: str = "GET", end: bool = True) -> int:
        stream = self.conn.get_next_available_stream_id()
        headers = [(":method", method), (":scheme", "http"), (":authority", "t"), (":path", path)]
        self.conn.send_headers(stream, headers + list(extra), end_stream=end)
        self.flush()
        return stream

    def response(self, stream: int) -> dict:
        return self.responses.setdefault(stream, {"body": b""})

    def feed(self, data: bytes):
        for event in self.conn.receive_data(data):
            if isinstance(event, h2.events.RemoteSettingsChanged):
                self.settings_seen = True
            stream = getattr(event, "stream_id", 0)
            if isinstance(event, h2.events.ResponseReceived):
                self.response(stream)["headers"] = dict(event.headers)
            elif isinstance(event, h2.events.DataReceived):
                self.response(stream)["body"] += event.data
                self.unacked[stream] = self.unacked.get(stream, 0) + event.flow_controlled_length
            elif isinstance(event, h2.events.StreamEnded):
                self.response(stream)["ended"] = True
            elif isinstance(event, h2.events.StreamReset):
                self.response(stream)["reset"] = event.error_code
            elif isinstance(event, h2.events.ConnectionTerminated):
                self.responses[0] = {"goaway": event.error_code}
        if self.ack:
            self.release()
        self.flush()

    def release(self):
        """Acknowledge every byte received so far: the server may send that much more."""
        for stream, size in self.unacked.items():
            self.conn.acknowledge_received_data(size, stream)  # a closed stream: connection
        self.unacked.clear()
        self.flush()

    def pump_once(self, timeout: float) -> bool:
        """Read and handle what the server sends within `timeout`; False if nothing."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(1 << 20)
        except TimeoutError:
            return False
        finally:
            self.sock.settimeout(10)
        if not data:
            raise ConnectionError("server closed the connection")
        self.feed(data)
        return True

    def pump_until(self, done, timeout: float = 10.0):
        deadline = time.monotonic() + timeout
        while not done():
            assert time.monotonic() < deadline, self.responses
            self.pump_once(max(0.01, deadline - time.monotonic()))

    def ended(self, stream: int) -> bool:
        r = self.responses.get(stream, {})
        return bool(r.get("ended") or "reset" in r)

    def send_body(self, stream: int, data: bytes, end: bool, quiet: float = 10.0) -> int:
        """Send `data` as the server's window allows; gives up (returning how much went)
        once the window stays shut for `quiet` seconds."""
        sent = 0
        while sent < len(data):
            window = min(
                self.conn.local_flow_control_window(stream), self.conn.max_outbound_frame_size
            )
            if window > 0:
                piece = data[sent : sent + window]
                self.conn.send_data(stream, piece)
                self.flush()
                sent += len(piece)
            elif not self.pump_once(quiet):
                return sent
        if end:
            self.conn.end_stream(stream)
            self.flush()
        return sent

    def close(self):
        self.sock.close()


# The h2c ways in.


def test_prior_knowledge(client, server):
    r = client.get("/scope?q=1")
    assert r.http_version == "HTTP/2"
    scope = r.json()
    assert scope["type"] == "http"
    assert scope["http_version"] == "2"
    assert scope["scheme"] == "http"
    assert scope["method"] == "GET"
    assert scope["path"] == "/scope"
    assert scope["query_string"] == "q=1"
    assert scope["server"] == ["127.0.0.1", server.port]
    assert "tls" not in scope.get("extensions", {})
    names = [name for name, _ in scope["headers"]]
    assert "host" in names  # from :authority, as HTTP/1.1 apps expect
    assert not any(name.startswith(":") for name in names)


@pytest.mark.parametrize("flag", ["--http2-prior-knowledge", "--http2"])
def test_curl(server, flag):
    out = subprocess.run(
        ["curl", "-sS", flag, "-w", "\n%{http_version} %{http_code}", f"{server.url}/"],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert out.returncode == 0, out.stderr
    body, status = out.stdout.rsplit("\n", 1)
    assert (body, status) == (HELLO.decode(), "2 200")


def test_upgrade_request_is_stream_1(server):
    """Upgrade: h2c by hand: 101, then the upgraded request is answered on stream 1."""
    with server.connect() as sock:
        raw = RawH2(server, sock=sock, upgraded=True)
        settings = raw.conn.initiate_upgrade_connection().decode()
        sock.sendall(
            b"GET /scope?up=1 HTTP/1.1\r\nHost: example.test\r\nX-Keep: me\r\n"
            b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
            + f"HTTP2-Settings: {settings}\r\n\r\n".encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(65536)
            assert chunk, head
            head += chunk
        head, rest = head.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 101 ")
        assert b"upgrade: h2c" in head.lower()
        raw.flush()  # the client preface and SETTINGS
        if rest:
            raw.feed(rest)
        raw.pump_until(lambda: raw.ended(1))
        assert raw.responses[1]["headers"][b":status"] == b"200"
        scope = json.loads(raw.responses[1]["body"])
        assert scope["http_version"] == "2"
        assert scope["method"] == "GET"
        assert scope["path"] == "/scope" and scope["query_string"] == "up=1"
        headers = dict(scope["headers"])
        assert headers["host"] == "example.test"
        assert headers["x-keep"] == "me"
        assert not {"upgrade", "http2-settings"} & set(headers)
        # The connection is HTTP/2 from now on.
        stream = raw.request("/")
        raw.pump_until(lambda: raw.ended(stream))
        assert raw.responses[stream]["body"] == HELLO


def test_upgrade_with_a_body_is_answered_over_http_1(server):
    out = subprocess.run(
        ["curl", "-sS", "--http2", "--data-binary", "payload", "-w", "\n%{http_code}"]
        + [f"{server.url}/echo"],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout == "payload\n200"
    with server.connect() as sock:
        answer = raw_exchange(
            sock,
            b"POST /echo HTTP/1.1\r\nHost: h\r\nConnection: Upgrade, HTTP2-Settings\r\n"
            b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n"
            b"Content-Length: 7\r\n\r\npayload",
            wait=1.0,
        )
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert answer.replace(b"<EOF>", b"").endswith(b"\r\n\r\npayload")


# The core HTTP checks of test_http.py, over HTTP/2 (prior knowledge).


def check_scope(client, server):
    r = client.get("/scope?a=1&b=%20", headers={"X-Custom": "Yes"})
    assert r.status_code == 200 and r.http_version == "HTTP/2"
    scope = r.json()
    assert scope["http_version"] == "2"
    assert scope["path"] == "/scope"
    assert scope["raw_path"] == "/scope"
    assert scope["query_string"] == "a=1&b=%20"
    assert ["x-custom", "Yes"] in scope["headers"]
    assert all(name == name.lower() for name, _ in scope["headers"])
    assert scope["client"][0] == "127.0.0.1"


def check_streaming_response(client, server):
    r = client.get("/stream")
    assert r.status_code == 200
    assert "transfer-encoding" not in r.headers  # connection-specific, not in HTTP/2
    assert r.content == STREAM_BODY


def check_server_and_date_headers(client, server):
    r = client.get("/")
    assert r.headers["server"] == "ferrocorn"
    assert "date" in r.headers


CORE_CHECKS = [check_scope, check_streaming_response, check_server_and_date_headers]
CORE_CHECKS += SHARED_CHECKS
CORE_CHECKS += SEND_CHECKS


@pytest.mark.parametrize("check", CORE_CHECKS, ids=lambda f: f.__name__[6:])
def test_core_http_over_h2(check, client, server):
    check(client, server)


# Many streams, big bodies, flow control.


def test_many_concurrent_streams_on_one_connection(server):
    async def main():
        async with httpx.AsyncClient(http1=False, http2=True, base_url=server.url) as client:
            return await asyncio.gather(*(client.get(f"/scope?i={i}") for i in range(50)))

    responses = asyncio.run(main())
    assert all(r.status_code == 200 and r.http_version == "HTTP/2" for r in responses)
    scopes = [r.json() for r in responses]
    assert [s["query_string"] for s in scopes] == [f"i={i}" for i in range(50)]
    assert len({s["client"][1] for s in scopes}) == 1  # all on one connection


def test_upload_5_mib(client):
    body = os.urandom(5 * MiB)
    r = client.post("/echo", content=body)
    assert r.status_code == 200 and r.http_version == "HTTP/2"
    assert r.content == body


def test_download_5_mib(client):
    with client.stream("GET", "/stream") as r:
        assert r.http_version == "HTTP/2"
        assert b"".join(r.iter_bytes()) == STREAM_BODY


def test_request_body_waits_for_the_app(server):
    """The client may send only a window's worth while the app doesn't read."""
    raw = RawH2(server)
    raw.pump_until(lambda: raw.settings_seen)
    window = raw.conn.remote_settings.initial_window_size
    body = os.urandom(max(5 * MiB, 4 * window))
    stream = raw.request("/gated-echo", method="POST", end=False)
    wait_record(server, "gated", "waiting")
    sent = raw.send_body(stream, body, end=False, quiet=1.0)
    assert sent < len(body) // 2, f"{sent} bytes taken in before the app read any"
    assert record(server)["gated"] == "waiting"
    assert httpx.get(f"{server.url}/open-gate").text == "opened"
    sent += raw.send_body(stream, body[sent:], end=True)
    assert sent == len(body)
    raw.pump_until(lambda: raw.ended(stream), timeout=30)
    response = raw.responses[stream]
    assert response["headers"][b":status"] == b"200"
    assert response["body"] == body
    assert int(response["headers"][b"x-pieces"]) > 1
    raw.close()


def test_response_waits_for_the_client_window(server):
    """A client that grants no window holds the app's send() back (256 KiB queued)."""
    raw = RawH2(server)
    raw.ack = False  # 64 KiB of window, never replenished for now
    stream = raw.request("/progress?80")
    raw.pump_until(lambda: "headers" in raw.responses.get(stream, {}))
    deadline = time.monotonic() + 10
    while record(server).get("progress", 0) < 1:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    time.sleep(0.5)  # room for a server that doesn't wait to run ahead
    held = record(server)["progress"]
    assert held < 80
    assert held * 65536 <= MiB, f"the app sent {held} x 64 KiB into a 64 KiB window"
    raw.ack = True
    raw.release()
    raw.pump_until(lambda: raw.ended(stream), timeout=30)
    assert raw.responses[stream]["body"] == STREAM_BODY
    assert record(server)["progress"] == 80
    raw.close()


@pytest.mark.timeout(30)
def test_a_reader_that_grants_no_window_holds_the_app_back(server):
    client = RawH2(server)
    client.request("/flood")  # and never acknowledge a byte of it
    time.sleep(1.5)
    sent = httpx.get(f"{server.url}/record").json()["http_flood_sent"]
    # 64 KiB of window plus the 256 KiB send() may queue: a handful of pieces, not 1 GiB.
    assert sent < 16, sent
    client.close()


def test_h2load(server):
    out = subprocess.run(
        ["h2load", "-n", "2000", "-c", "4", "-m", "10", f"{server.url}/"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "2000 succeeded, 0 failed, 0 errored" in out.stdout, out.stdout + out.stderr
    assert re.search(r"status codes: 2000 2xx", out.stdout), out.stdout


# Resets and header fields.


def test_limit_concurrency_answers_503_on_a_stream():
    with Server("basic:app", "--limit-concurrency", "1") as s:

        async def main():
            async with httpx.AsyncClient(http1=False, http2=True, base_url=s.url) as client:
                slow = asyncio.ensure_future(client.get("/slow?1"))
                await asyncio.sleep(0.3)
                refused = await client.get("/count")  # another stream, same connection
                return refused, await slow

        refused, slow = asyncio.run(main())
        assert refused.http_version == "HTTP/2" and refused.status_code == 503
        assert slow.status_code == 200
        assert httpx.get(f"{s.url}/count").status_code == 200


def test_stream_reset_disconnects_that_request_only(server):
    raw = RawH2(server)
    slow = raw.request("/wait-disconnect")
    wait_record(server, "wait_disconnect", "waiting")
    raw.conn.reset_stream(slow)
    raw.flush()
    normal = raw.request("/")
    raw.pump_until(lambda: raw.ended(normal))
    assert raw.responses[normal]["headers"][b":status"] == b"200"
    assert raw.responses[normal]["body"] == HELLO
    wait_record(server, "wait_disconnect", "disconnected")
    assert "headers" not in raw.responses.get(slow, {})
    # The connection goes on serving.
    again = raw.request("/scope")
    raw.pump_until(lambda: raw.ended(again))
    assert json.loads(raw.responses[again]["body"])["http_version"] == "2"
    raw.close()


def test_cookie_fields_are_joined(server):
    raw = RawH2(server)
    stream = raw.request("/scope", [("cookie", "a=1"), ("x-other", "y"), ("cookie", "b=2")])
    raw.pump_until(lambda: raw.ended(stream))
    headers = json.loads(raw.responses[stream]["body"])["headers"]
    assert [v for n, v in headers if n == "cookie"] == ["a=1; b=2"]
    assert ["x-other", "y"] in headers
    raw.close()


# Options.


def frames(sock: socket.socket):
    """Yield the server's frames, read bare off the socket."""
    buf = b""
    while True:
        while len(buf) >= 9:
            frame, length = hf.Frame.parse_frame_header(memoryview(buf[:9]))
            if len(buf) < 9 + length:
                break
            frame.parse_body(memoryview(buf[9 : 9 + length]))
            buf = buf[9 + length :]
            yield frame
        data = sock.recv(65536)
        if not data:
            return
        buf += data


def test_limits_are_advertised_and_enforced():
    args = [
        "--workers",
        "1",
        "--http2-max-concurrent-streams",
        "5",
        "--http2-max-header-list-size",
        "4096",
        "--http2-max-frame-size",
        "65536",
    ]
    with Server(APP, *args) as s:
        raw = RawH2(s)
        raw.pump_until(lambda: raw.settings_seen)
        assert raw.conn.remote_settings.max_concurrent_streams == 5
        assert raw.conn.remote_settings.max_frame_size == 65536
        big = raw.request("/", [("x-big", "v" * 8000)])
        raw.pump_until(lambda: big in raw.responses)
        refused = raw.responses[big]
        assert "reset" in refused or refused.get("headers", {}).get(b":status") == b"431"
        assert refused.get("body", b"") != HELLO
        ok = raw.request("/")
        raw.pump_until(lambda: raw.ended(ok))
        assert raw.responses[ok]["headers"][b":status"] == b"200"
        assert raw.responses[ok]["body"] == HELLO
        raw.close()

        # A sixth open stream is refused (bare frames: the h2 library won't send it).
        with s.connect(timeout=10) as sock:
            sock.sendall(PREFACE + hf.SettingsFrame(0).serialize())
            incoming = frames(sock)
            for frame in incoming:
                if isinstance(frame, hf.SettingsFrame) and "ACK" not in frame.flags:
                    sock.sendall(hf.SettingsFrame(0, flags=["ACK"]).serialize())
                    break
            encoder = hpack.Encoder()

            def open_stream(stream_id: int, path: str):
                block = encoder.encode(
                    [(":method", "GET"), (":scheme", "http"), (":authority", "t"), (":path", path)]
                )
                frame = hf.HeadersFrame(stream_id, block, flags=["END_HEADERS", "END_STREAM"])
                sock.sendall(frame.serialize())

            for stream_id in (1, 3, 5, 7, 9, 11):
                open_stream(stream_id, "/wait-disconnect")
            for frame in incoming:
                assert not (isinstance(frame, hf.HeadersFrame) and frame.stream_id == 11)
                assert not isinstance(frame, hf.GoAwayFrame), frame
                if isinstance(frame, hf.RstStreamFrame) and frame.stream_id == 11:
                    assert frame.error_code in (1, 7)  # PROTOCOL_ERROR, REFUSED_STREAM
                    break
            else:
                raise AssertionError("connection closed without refusing stream 11")
            # Once one stream closes, there is room for another.
            sock.sendall(hf.RstStreamFrame(1, error_code=8).serialize())  # CANCEL
            open_stream(13, "/")
            for frame in incoming:
                if isinstance(frame, hf.HeadersFrame) and frame.stream_id == 13:
                    assert (b":status", b"200") in hpack.Decoder().decode(frame.data, raw=True)
                    break
                assert not isinstance(frame, hf.GoAwayFrame), frame
            else:
                raise AssertionError("connection closed without answering stream 13")


def test_max_frame_size_out_of_range_stops_startup():
    result = run_to_exit(APP, "--http2-max-frame-size", "1024")
    assert result.returncode != 0
    assert "http2-max-frame-size" in result.stderr
    assert "ferrocorn ready" not in result.stderr


def test_http_1_only_refuses_h2():
    with Server(APP, "--http", "1") as s:
        with s.connect() as sock:
            answer = raw_exchange(sock, PREFACE + hf.SettingsFrame(0).serialize(), wait=2.0)
        # An HTTP/1.1 error or a closed connection, never HTTP/2 frames (nor silence).
        assert answer in (b"<EOF>", b"<RST>") or re.match(rb"HTTP/1\.[01] [45]\d\d ", answer)
        with httpx.Client(http1=False, http2=True) as client:
            with pytest.raises(httpx.TransportError):
                client.get(f"{s.url}/")
        out = subprocess.run(
            ["curl", "-sS", "--http2", "-w", "\n%{http_version}", f"{s.url}/"],
            capture_output=True,
            text=True,
            timeout=20,
        )
        assert out.stdout == HELLO.decode() + "\n1.1"  # the upgrade offer is ignored
        assert httpx.get(f"{s.url}/").content == HELLO


def test_http_2_only():
    with Server(APP, "--http", "2") as s:
        with httpx.Client(http1=False, http2=True, base_url=s.url) as client:
            r = client.get("/scope")
            assert r.http_version == "HTTP/2"
            assert r.json()["http_version"] == "2"
        with s.connect() as sock:
            answer = raw_exchange(sock, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", wait=2.0)
        assert not answer.startswith(b"HTTP/")  # HTTP/1.1 isn't served
        assert HELLO not in answer
