"""ASGI WebSockets against a real server: the `websockets` client for the protocol as
clients use it, raw sockets for what a well-behaved client never sends."""

import base64
import json
import os
import signal
import socket
import struct
import threading
import time
import zlib

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory
from websockets.sync.client import connect

from tests.server import Server

APP = "protocols:app"


@pytest.fixture(scope="module")
def server():
    with Server(APP) as s:
        yield s


def ws_url(server, path: str) -> str:
    return f"ws://{server.host}:{server.port}{path}"


def record(server) -> dict:
    return httpx.get(f"{server.url}/record").json()


def wait_record(server, key: str, timeout: float = 5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = record(server).get(key)
        if value is not None:
            return value
        time.sleep(0.05)
    raise AssertionError(f"{key} not recorded: {record(server)}")


# --- raw frames -------------------------------------------------------------------------


def raw_handshake(server, path: str = "/echo") -> socket.socket:
    sock = socket.create_connection((server.host, server.port), timeout=5)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101 "), head
    return sock


def frame(opcode: int, payload: bytes, fin: bool = True, masked: bool = True) -> bytes:
    first = (0x80 if fin else 0) | opcode
    mask_bit = 0x80 if masked else 0
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", first, mask_bit | n)
    elif n < 1 << 16:
        head = struct.pack("!BBH", first, mask_bit | 126, n)
    else:
        head = struct.pack("!BBQ", first, mask_bit | 127, n)
    if not masked:
        return head + payload
    mask = os.urandom(4)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def read_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def read_frame(sock: socket.socket) -> tuple[int, bytes]:
    b0, b1 = read_exactly(sock, 2)
    assert b1 & 0x80 == 0, "server frames are not masked"
    n = b1 & 0x7F
    if n == 126:
        (n,) = struct.unpack("!H", read_exactly(sock, 2))
    elif n == 127:
        (n,) = struct.unpack("!Q", read_exactly(sock, 8))
    return b0 & 0x0F, read_exactly(sock, n)


def read_close_code(sock: socket.socket) -> int:
    while True:
        opcode, payload = read_frame(sock)
        if opcode == 0x8:
            return struct.unpack("!H", payload[:2])[0] if payload else 1005


# --- messages ---------------------------------------------------------------------------


def test_text_and_bytes_echo(server):
    with connect(ws_url(server, "/echo"), max_size=None) as ws:
        ws.send("héllo")
        assert ws.recv() == "héllo"
        ws.send(b"\x00\x01\x02")
        assert ws.recv() == b"\x00\x01\x02"
        big = os.urandom(1 << 20)
        ws.send(big)
        assert ws.recv() == big
        ws.send(b"")
        assert ws.recv() == b""
        ws.send(["frag", "mented"])  # one message in several frames
        assert ws.recv() == "fragmented"


def test_scope(server):
    with connect(ws_url(server, "/scope?a=1"), subprotocols=["p1", "p2"]) as ws:
        scope = json.loads(ws.recv())
    assert scope["type"] == "websocket"
    assert scope["scheme"] == "ws"
    assert scope["path"] == "/scope"
    assert scope["query_string"] == "a=1"
    assert scope["subprotocols"] == ["p1", "p2"]
    assert scope["http_version"] == "1.1"
    assert scope["asgi"] == {"version": "3.0", "spec_version": "2.4"}
    assert "websocket.http.response" in scope["extensions"]
    assert "method" not in scope


def test_subprotocol_and_extra_headers(server):
    with connect(ws_url(server, "/subprotocol"), subprotocols=["a", "b"]) as ws:
        assert ws.subprotocol == "b"
        assert ws.response.headers["x-extra"] == "yes"
        ws.send("still echoing")
        assert ws.recv() == "still echoing"


def test_server_close_code_and_reason_reach_the_client(server):
    with connect(ws_url(server, "/close-with?code=4001&reason=bye")) as ws:
        with pytest.raises(ConnectionClosed):
            ws.recv()
        assert ws.protocol.close_rcvd.code == 4001
        assert ws.protocol.close_rcvd.reason == "bye"


def test_client_close_code_and_reason_reach_the_app(server):
    with connect(ws_url(server, "/record-disconnect")) as ws:
        ws.close(4002, "see you")
    assert wait_record(server, "disconnect") == {"code": 4002, "reason": "see you"}


def test_close_without_code_is_1005(server):
    sock = raw_handshake(server, "/record-disconnect")
    sock.sendall(frame(0x8, b""))
    assert read_close_code(sock) == 1005
    sock.close()
    deadline = time.monotonic() + 5
    while record(server).get("disconnect", {}).get("code") != 1005:
        assert time.monotonic() < deadline, record(server)
        time.sleep(0.05)


def test_close_before_accept_is_403(server):
    with pytest.raises(InvalidStatus) as info:
        connect(ws_url(server, "/deny"))
    assert info.value.response.status_code == 403


def test_denial_response(server):
    with pytest.raises(InvalidStatus) as info:
        connect(ws_url(server, "/deny-response"))
    response = info.value.response
    assert response.status_code == 418
    assert response.headers["x-deny"] == "1"
    assert response.body == b"no teapot"


def test_receive_after_own_close_is_a_disconnect(server):
    with connect(ws_url(server, "/close-then-receive")) as ws:
        with pytest.raises(ConnectionClosed):
            ws.recv()
        assert ws.protocol.close_rcvd.code == 4003
    # The client echoes the server's code, as RFC 6455 section 5.5.1 asks.
    assert wait_record(server, "after_own_close") == {"type": "websocket.disconnect", "code": 4003}


def test_send_after_own_close_is_a_runtime_error(server):
    with connect(ws_url(server, "/send-after-close")) as ws:
        with pytest.raises(ConnectionClosed):
            ws.recv()
    assert wait_record(server, "after_close")["runtime_error"] is True


def test_send_after_client_left_is_an_oserror(server):
    with connect(ws_url(server, "/send-after-disconnect")):
        pass
    outcome = wait_record(server, "after_disconnect")
    assert outcome == {"type": "ClientDisconnected", "os_error": True}


# --- protocol enforcement ---------------------------------------------------------------


def test_ping_is_answered(server):
    with connect(ws_url(server, "/echo")) as ws:
        assert ws.ping(b"are you there").wait(5)


def test_invalid_utf8_closes_with_1007(server):
    sock = raw_handshake(server)
    sock.sendall(frame(0x1, b"\xff\xfe"))
    assert read_close_code(sock) == 1007


def test_unmasked_frame_closes_with_1002(server):
    sock = raw_handshake(server)
    sock.sendall(frame(0x1, b"hi", masked=False))
    assert read_close_code(sock) == 1002


def test_raw_fragments_and_interleaved_ping(server):
    sock = raw_handshake(server)
    sock.sendall(frame(0x1, b"ab", fin=False) + frame(0x9, b"p") + frame(0x0, b"cd"))
    assert read_frame(sock) == (0xA, b"p")
    assert read_frame(sock) == (0x1, b"abcd")
    sock.close()


def test_unsolicited_pong_is_ignored(server):
    # RFC 6455 section 5.5.3: a pong nobody asked for is a heartbeat; it is not an error.
    sock = raw_handshake(server)
    sock.sendall(frame(0xA, b"heartbeat") + frame(0x1, b"still here"))
    assert read_frame(sock) == (0x1, b"still here")
    sock.close()


def test_max_size_closes_with_1009():
    with Server(APP, "--ws-max-size", "1024") as s:
        with connect(ws_url(s, "/echo"), compression=None) as ws:
            ws.send(b"x" * 1000)
            assert ws.recv() == b"x" * 1000
            ws.send(b"x" * 2048)
            with pytest.raises(ConnectionClosed):
                ws.recv()
            assert ws.protocol.close_rcvd.code == 1009


def test_permessage_deflate_on_by_default(server):
    with connect(ws_url(server, "/echo"), max_size=None) as ws:
        assert "permessage-deflate" in ws.response.headers["sec-websocket-extensions"]
        text = "compress me " * 20000
        ws.send(text)
        assert ws.recv() == text


def test_permessage_deflate_can_be_turned_off():
    with Server(APP, "--ws-per-message-deflate", "false") as s:
        with connect(ws_url(s, "/echo")) as ws:
            assert "sec-websocket-extensions" not in ws.response.headers
            ws.send("plain")
            assert ws.recv() == "plain"


def test_permessage_deflate_echoes_compressible_then_random_data(server):
    # Issue #11: the server's compressed frame for 4 KiB of zeros then 60 KiB of noise
    # was 3 KiB short; the client must get every message back byte for byte.
    zeros_then_noise = bytes(4096) + os.urandom(61440)
    big = bytes(8192) + os.urandom(120 << 10)
    with connect(ws_url(server, "/echo"), max_size=None) as ws:
        assert ws.response.headers["sec-websocket-extensions"].startswith("permessage-deflate")
        for payload in (zeros_then_noise, zeros_then_noise, big, os.urandom(128 << 10), big):
            ws.send(payload)
            assert ws.recv() == payload
        text = "a" * 4096 + os.urandom(61440).hex()
        ws.send(text)
        assert ws.recv() == text


def raw_handshake_ext(server, extensions: str) -> tuple[socket.socket, str]:
    """A handshake offering `extensions`; returns the socket and the server's answer."""
    sock = socket.create_connection((server.host, server.port), timeout=5)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Sec-WebSocket-Extensions: {extensions}\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101 "), head
    answer = ""
    for line in head.decode("latin-1").split("\r\n"):
        name, _, value = line.partition(":")
        if name.lower() == "sec-websocket-extensions":
            answer = value.strip()
    return sock, answer


def read_data_frame(sock: socket.socket) -> tuple[bool, bytes]:
    """One unmasked server frame: (RSV1, payload)."""
    b0, b1 = read_exactly(sock, 2)
    n = b1 & 0x7F
    if n == 126:
        n = struct.unpack("!H", read_exactly(sock, 2))[0]
    elif n == 127:
        n = struct.unpack("!Q", read_exactly(sock, 8))[0]
    assert b0 & 0x80, "one frame per message"
    return bool(b0 & 0x40), read_exactly(sock, n)


def inflate_within_window(d, wire: bytes) -> bytes:
    """Inflate one message with `d`, a raw decompressobj kept across the connection's
    messages (context takeover), 256 bytes out per step, so that a back-reference
    farther than its window fails instead of being served from output this step
    already holds."""
    data, out = wire + b"\x00\x00\xff\xff", b""
    while data:
        out += d.decompress(data, 256)
        data = d.unconsumed_tail
    return out


def test_server_max_window_bits_is_honoured(server):
    # Repeats 3000 bytes apart: a 32 KiB window would reuse them, a small one can't.
    payload = os.urandom(3000) * 8
    # The check has teeth: a full-window stream fails it.
    full = zlib.compressobj(wbits=-15)
    wire = (full.compress(payload) + full.flush(zlib.Z_SYNC_FLUSH))[:-4]
    with pytest.raises(zlib.error):
        inflate_within_window(zlib.decompressobj(-9), wire)
    for bits in (9, 10, 12, 15):
        sock, answer = raw_handshake_ext(
            server, f"permessage-deflate; server_max_window_bits={bits}; client_max_window_bits"
        )
        with sock:
            assert answer == f"permessage-deflate; server_max_window_bits={bits}"
            inflater = zlib.decompressobj(-bits)
            for _ in range(2):  # the second message may refer back to the first
                sock.sendall(frame(0x2, payload))
                compressed, wire = read_data_frame(sock)
                assert compressed
                assert inflate_within_window(inflater, wire) == payload
                if bits == 15:
                    assert len(wire) < len(payload) // 4


def test_an_eight_bit_server_window_is_accepted_and_sent_uncompressed(server):
    # zlib can't make a raw deflate stream with a 256-byte window: the offer is accepted,
    # the client's compressed messages are read, ours go out uncompressed.
    sock, answer = raw_handshake_ext(
        server, "permessage-deflate; server_no_context_takeover; server_max_window_bits=8"
    )
    with sock:
        assert answer == "permessage-deflate; server_no_context_takeover; server_max_window_bits=8"
        text = "eight bits " * 200
        packer = zlib.compressobj(wbits=-9)
        wire = (packer.compress(text.encode()) + packer.flush(zlib.Z_SYNC_FLUSH))[:-4]
        sock.sendall(frame(0x41, wire))  # RSV1 + text
        assert read_data_frame(sock) == (False, text.encode())


def test_invalid_extension_offers_fall_through_to_the_next(server):
    cases = {
        "permessage-deflate; server_max_window_bits=7, "
        "permessage-deflate; client_max_window_bits=9; server_no_context_takeover": (
            "permessage-deflate; server_no_context_takeover"
        ),
        "permessage-deflate; server_max_window_bits=016, permessage-deflate; "
        'server_max_window_bits="11"': "permessage-deflate; server_max_window_bits=11",
        "permessage-deflate; client_max_window_bits=16": "",
        "permessage-deflate; server_max_window_bits": "",
        "permessage-deflate; client_no_context_takeover; client_no_context_takeover": "",
        "x-webkit-deflate-frame, permessage-deflate; client_no_context_takeover": (
            "permessage-deflate; client_no_context_takeover"
        ),
    }
    for offer, expected in cases.items():
        sock, answer = raw_handshake_ext(server, offer)
        with sock:
            assert answer == expected, offer
            sock.sendall(frame(0x1, b"x" * 100))
            assert read_data_frame(sock)[0] == bool(expected)


@pytest.mark.parametrize("bits", [9, 10, 12, 15])
def test_websockets_client_with_small_windows(server, bits):
    # The websockets client inflates with the window it asked for, across messages: a
    # reference beyond it into the previous message would fail there.
    factory = ClientPerMessageDeflateFactory(
        server_max_window_bits=bits, client_max_window_bits=bits
    )
    with connect(ws_url(server, "/echo"), extensions=[factory], max_size=None) as ws:
        answer = ws.response.headers["sec-websocket-extensions"]
        assert answer == f"permessage-deflate; server_max_window_bits={bits}"
        message = os.urandom(2000)
        for payload in (message, message, message + bytes(70000), os.urandom(1 << 17)):
            ws.send(payload)
            assert ws.recv() == payload


# --- bytes-like sends -------------------------------------------------------------------


@pytest.fixture(scope="module")
def echo_server():
    with Server("ws_echo:app") as s:
        yield s


@pytest.mark.parametrize("path", ["/bytes", "/bytearray", "/memoryview"])
def test_send_accepts_bytes_like(echo_server, path):
    with connect(ws_url(echo_server, path), max_size=None) as ws:
        for payload in (b"", b"\x00\x01\x02", os.urandom(100_000)):
            ws.send(payload)
            assert ws.recv() == payload


def test_send_of_a_strided_memoryview_sends_its_bytes(echo_server):
    with connect(ws_url(echo_server, "/memoryview-strided"), max_size=None) as ws:
        payload = os.urandom(50_001)
        ws.send(payload)
        assert ws.recv() == payload[::2]


def test_send_rejects_bytes_that_are_not_bytes_like(echo_server):
    # A list is not bytes-like (bytes([1, 2, 3]) would have made one): the app's send
    # raises, and the connection stays usable.
    with connect(ws_url(echo_server, "/bad-bytes")) as ws:
        ws.send(b"go")
        answer = ws.recv()
        assert "must be bytes, bytearray or memoryview, not list" in answer, answer
        ws.send(b"again")
        assert "not list" in ws.recv()


@pytest.mark.timeout(30)
def test_ping_timeout_closes_silent_clients():
    with Server(APP, "--ws-ping-interval", "0.5", "--ws-ping-timeout", "0.5") as s:
        sock = raw_handshake(s)
        opcode, _ = read_frame(sock)
        assert opcode == 0x9  # the server's ping, which this client never answers
        assert read_close_code(sock) == 1011
        # A client that answers pings (websockets does) stays connected.
        with connect(ws_url(s, "/echo")) as ws:
            time.sleep(2.5)
            ws.send("alive")
            assert ws.recv() == "alive"


@pytest.mark.timeout(30)
def test_slow_reader_gets_backpressure_not_memory():
    with Server(APP) as s:
        with connect(ws_url(s, "/flood"), max_size=None, compression=None) as ws:
            time.sleep(2)  # don't read: the app's send() must wait
            sent = record(s)["flood_sent"]
            assert sent < 100, sent
            ws.recv()


@pytest.mark.timeout(60)
def test_max_queue_stops_reading_a_fast_client():
    with Server(APP, "--ws-max-queue", "2") as s:
        with connect(ws_url(s, "/slow-consumer"), compression=None, max_size=None) as ws:
            sent = 0

            def flood():
                nonlocal sent
                for _ in range(100):
                    ws.send(b"x" * (1 << 20))
                    sent += 1

            sender = threading.Thread(target=flood)
            sender.start()
            time.sleep(1.0)
            # 100 MiB can't be in flight: the server stopped reading after 2 messages,
            # so the client is stuck once the socket buffers are full.
            assert sent < 60, sent
            sender.join(30)
            assert ws.recv() == "got 100"


def test_ws_none_serves_upgrades_as_http():
    with Server(APP, "--ws", "none") as s:
        with pytest.raises(InvalidStatus) as info:
            connect(ws_url(s, "/"))
        assert info.value.response.status_code == 200
        assert info.value.response.body == b"Hello, world!"


def test_http_alongside_websockets(server):
    with connect(ws_url(server, "/echo")) as ws, httpx.Client() as client:
        for i in range(3):
            ws.send(f"m{i}")
            assert client.get(f"{server.url}/").text == "Hello, world!"
            assert ws.recv() == f"m{i}"


def test_several_workers():
    with Server(APP, "--workers", "2") as s:
        for i in range(20):
            with connect(ws_url(s, "/echo")) as ws:
                ws.send(str(i))
                assert ws.recv() == str(i)


@pytest.mark.timeout(30)
def test_graceful_stop_closes_with_1012_and_runs_finally(tmp_path):
    marker = tmp_path / "finally.txt"
    s = Server(APP, "--timeout-graceful-shutdown", "2", env={"FERROCORN_TEST_MARKER": str(marker)})
    with s, connect(ws_url(s, "/finally")) as ws:
        time.sleep(0.2)
        s.signal(signal.SIGTERM)
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=10)
        assert ws.protocol.close_rcvd.code == 1012
        assert s.wait(15) == 0
    assert marker.read_text() == "finally ran, disconnect code 1012"
