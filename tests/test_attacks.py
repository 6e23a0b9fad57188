"""Protocol attacks against one worker, from raw clients on loopback: bare HTTP/2 frames
(hyperframe + hpack), raw WebSocket frames and raw HTTP/1.1 bytes. For every attack the
server must stop or bound it, and meanwhile the SAME worker must answer another client
promptly, with its CPU time (from /proc/<pid>/stat) and its memory (RSS, and the peak
RSS where a transient spike is the danger) within stated bounds. docs/reliability.md
lists each case and what happened.

The bounds are generous on purpose (a shared 2-core machine), but each one is far below
what the unprotected behaviour would cost: the comment next to it says by how much."""

import base64
import os
import socket
import struct
import threading
import time
import zlib

import hpack
import httpx
import hyperframe.frame as hf
import pytest

from tests.server import Server

APP = "attack_app:app"
HELLO = b"Hello, world!"
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
MiB = 1024 * 1024
CLK_TCK = os.sysconf("SC_CLK_TCK")
# HTTP/2 error codes (RFC 9113 7).
PROTOCOL_ERROR = 0x1
COMPRESSION_ERROR = 0x9
ENHANCE_YOUR_CALM = 0xB
WS_MAX_SIZE = MiB


@pytest.fixture
def server():
    # A fresh worker per attack: memory one attack left allocated (and the allocator
    # keeps) would hide the next attack's growth.
    with Server(
        APP,
        "--workers",
        "1",
        "--timeout-request-header",
        "1",
        "--timeout-request-body",
        "1",
        "--ws-max-size",
        str(WS_MAX_SIZE),
        "--ws-ping-interval",
        "0",
    ) as s:
        yield s


# Measuring the worker.


class Worker:
    """The server's one worker: CPU seconds and memory, relative to when the attack began."""

    def __init__(self, server: Server):
        (self.pid,) = server.worker_pids()
        self.server = server

    def __enter__(self):
        # Reset the peak RSS (VmHWM) so peak_grown_mb() sees this attack's peak only.
        try:
            with open(f"/proc/{self.pid}/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            pass
        self.cpu0 = self.cpu()
        self.rss0 = self._status_mb("VmRSS")
        return self

    def __exit__(self, *exc):
        return None

    def cpu(self) -> float:
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime

    def _status_mb(self, key: str) -> float:
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024
        raise AssertionError(f"no {key} in /proc/{self.pid}/status")

    def cpu_used(self) -> float:
        return self.cpu() - self.cpu0

    def grown_mb(self) -> float:
        return self._status_mb("VmRSS") - self.rss0

    def peak_grown_mb(self) -> float:
        return self._status_mb("VmHWM") - self.rss0

    def idle_cpu(self, seconds: float = 1.0) -> float:
        """CPU seconds the worker burns over `seconds` of wall time while an attack is
        held: a worker that isn't busy-looping on it uses next to none."""
        start = self.cpu()
        time.sleep(seconds)
        return self.cpu() - start


def measured(case: str, **numbers) -> None:
    """Print what an attack cost when FERROCORN_ATTACK_REPORT is set (run with -s): the
    figures in docs/reliability.md come from such a run."""
    if os.environ.get("FERROCORN_ATTACK_REPORT"):
        shown = ", ".join(
            f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in numbers.items()
        )
        print(f"\n[attack] {case}: {shown}")


def assert_serves(server: Server, http2: bool = False, within: float = 2.0):
    """Another client gets its answer from the same worker, promptly."""
    start = time.monotonic()
    with httpx.Client(http1=not http2, http2=http2, timeout=10) as client:
        response = client.get(f"{server.url}/")
    elapsed = time.monotonic() - start
    assert response.status_code == 200 and response.content == HELLO
    assert response.http_version == ("HTTP/2" if http2 else "HTTP/1.1")
    assert elapsed < within, f"a normal request took {elapsed:.2f} s during the attack"


def app_calls(server: Server) -> int:
    return httpx.get(f"{server.url}/calls", timeout=10).json()["http"]


def until_blocked(sock: socket.socket, chunk: bytes, seconds: float) -> tuple[int, bool]:
    """Send `chunk` over and over without reading, for at most `seconds`. Returns the
    bytes sent and whether the server stopped taking them (backpressure: a send that
    made no progress for 0.5 s) or closed."""
    sock.settimeout(0.5)
    sent = 0
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            sent += sock.send(chunk)
    except TimeoutError:
        return sent, True
    except OSError:
        return sent, True
    return sent, False


# HTTP/2 on bare frames.


def h2_open(server: Server, settings: dict | None = None) -> socket.socket:
    """A prior-knowledge HTTP/2 connection past the SETTINGS exchange."""
    sock = socket.create_connection((server.host, server.port), timeout=10)
    sock.sendall(PREFACE + hf.SettingsFrame(0, settings=settings or {}).serialize())
    buf = b""
    while True:
        while len(buf) >= 9:
            frame, length = hf.Frame.parse_frame_header(memoryview(buf[:9]))
            if len(buf) < 9 + length:
                break
            buf = buf[9 + length :]
            if isinstance(frame, hf.SettingsFrame) and "ACK" not in frame.flags:
                sock.sendall(hf.SettingsFrame(0, flags=["ACK"]).serialize())
                return sock
        data = sock.recv(65536)
        assert data, "server closed during the HTTP/2 handshake"
        buf += data


class FrameReader(threading.Thread):
    """Reads and counts the server's frames in the background (so the server is never
    blocked on writing to us), noting a GOAWAY and the connection's end."""

    def __init__(self, sock: socket.socket):
        super().__init__(daemon=True)
        self.sock = sock
        self.goaway: hf.GoAwayFrame | None = None
        self.headers = 0
        self.resets = 0
        self.statuses: list[bytes] = []  # :status of each response, in order
        self.decoder = hpack.Decoder()
        self.closed = threading.Event()
        self.start()

    def run(self):
        buf = b""
        try:
            self.sock.settimeout(30)
            while True:
                data = self.sock.recv(1 << 20)
                if not data:
                    break
                buf += data
                while len(buf) >= 9:
                    frame, length = hf.Frame.parse_frame_header(memoryview(buf[:9]))
                    if len(buf) < 9 + length:
                        break
                    frame.parse_body(memoryview(buf[9 : 9 + length]))
                    buf = buf[9 + length :]
                    if isinstance(frame, hf.GoAwayFrame):
                        self.goaway = frame
                    elif isinstance(frame, hf.HeadersFrame):
                        self.headers += 1
                        fields = dict(self.decoder.decode(frame.data, raw=True))
                        self.statuses.append(fields.get(b":status"))
                    elif isinstance(frame, hf.RstStreamFrame):
                        self.resets += 1
        except OSError:
            pass
        finally:
            self.closed.set()


def request_block(encoder: hpack.Encoder, path: str, extra=()) -> bytes:
    fields = [(":method", "GET"), (":scheme", "http"), (":authority", "t"), (":path", path)]
    return encoder.encode(fields + list(extra))


def hpack_int(value: int, prefix_bits: int, flags: int) -> bytes:
    """An HPACK integer (RFC 7541 5.1) in a first byte carrying `flags`."""
    top = (1 << prefix_bits) - 1
    if value < top:
        return bytes([flags | value])
    out = bytearray([flags | top])
    value -= top
    while value >= 128:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    out.append(value)
    return bytes(out)


def literal(name: bytes, value: bytes, indexed: bool = False) -> bytes:
    """A literal field with a new name, not Huffman-coded: with incremental indexing
    (it enters the dynamic table) or without (RFC 7541 6.2.1, 6.2.2)."""
    first = b"\x40" if indexed else b"\x00"
    return first + hpack_int(len(name), 7, 0) + name + hpack_int(len(value), 7, 0) + value


@pytest.mark.parametrize("pause", [0.0, 0.1], ids=["same-write", "after-accept"])
def test_h2_rapid_reset_ends_in_goaway(server, pause):
    """HEADERS + RST_STREAM floods (CVE-2023-44487). Sent in one write, h2 sees the
    resets before the streams are accepted (its pending-accept limit); paused, the
    streams reach the app first and only our per-connection reset budget stops it."""
    worker = Worker(server)
    calls_before = app_calls(server)
    sock = h2_open(server)
    reader = FrameReader(sock)
    encoder = hpack.Encoder()
    attempted = 0
    with worker:
        stream = 1
        try:
            for _ in range(40):  # up to 2,000 streams, 50 at a time
                ids = range(stream, stream + 100, 2)
                sock.sendall(
                    b"".join(
                        hf.HeadersFrame(
                            i,
                            request_block(encoder, "/slow"),
                            flags=["END_HEADERS", "END_STREAM"],
                        ).serialize()
                        for i in ids
                    )
                )
                if pause:
                    time.sleep(pause)
                sock.sendall(b"".join(hf.RstStreamFrame(i, error_code=8).serialize() for i in ids))
                attempted += len(ids)
                stream += 100
                if reader.closed.is_set():
                    break
        except OSError:
            pass  # the server closed the connection under us
        assert reader.closed.wait(10), "the connection was never closed"
        assert reader.goaway is not None and reader.goaway.error_code == ENHANCE_YOUR_CALM
        assert_serves(server, http2=True)
        cpu = worker.cpu_used()
    sock.close()
    started = app_calls(server) - calls_before
    # Unprotected, every one of the `attempted` streams runs the app (5,000 on the
    # "after-accept" variant); the budget lets at most a few hundred through.
    measured(f"rapid reset {pause}", attempted=attempted, reached_app=started, cpu_s=cpu)
    assert started <= 400, f"{started} of {attempted} reset streams reached the app"
    assert cpu < 5.0, f"the worker spent {cpu:.1f} s of CPU on the flood"


@pytest.mark.parametrize("payload", [0, 1000], ids=["empty", "1000-bytes"])
def test_h2_continuation_flood_is_cut(server, payload):
    """HEADERS without END_HEADERS, then CONTINUATION frames that never end the block."""
    worker = Worker(server)
    sock = h2_open(server)
    reader = FrameReader(sock)
    # A literal field without indexing per frame ('x: vvv...'), so a non-empty frame is
    # valid HPACK that a decoder would have to hold on to.
    piece = literal(b"x", b"v" * (payload - 6)) if payload else b""
    assert len(piece) == payload
    frame = hf.ContinuationFrame(1, piece).serialize()
    with worker:
        sock.sendall(hf.HeadersFrame(1, request_block(hpack.Encoder(), "/")).serialize())
        sent, _ = until_blocked(sock, frame * 100, seconds=5)
        assert reader.closed.wait(5), "the connection was never closed"
        assert reader.goaway is not None and reader.goaway.error_code in (
            ENHANCE_YOUR_CALM,
            COMPRESSION_ERROR,
        )
        assert reader.headers == 0
        assert_serves(server, http2=True)
        grown = worker.peak_grown_mb()
    sock.close()
    measured(f"continuation {payload}", sent_mb=sent / MiB, peak_mb=grown, goaway=reader.goaway)
    # Unprotected, everything sent is held as one header block (tens of MB).
    assert grown < 16, f"peak RSS grew {grown:.1f} MB after {sent / MiB:.1f} MB of CONTINUATION"


def test_h2_hpack_bomb_stops_at_the_header_list_limit(server):
    """One 4,000-byte field put in the dynamic table, then referenced by a one-byte index
    16,000 times: a 20 KB block that decodes to 64 MB of header list (past the 64 KiB
    --http2-max-header-list-size)."""
    worker = Worker(server)
    sock = h2_open(server)
    reader = FrameReader(sock)
    encoder = hpack.Encoder()
    block = request_block(encoder, "/")
    # Literal with incremental indexing, new name (RFC 7541 6.2.1): enters the table as
    # dynamic index 62 (the encoder above indexed nothing: it knew every field).
    block += literal(b"x-bomb", b"v" * 4000, indexed=True)
    block += bytes([0x80 | 62]) * 16_000
    first, rest = block[:16384], block[16384:]
    with worker:
        sock.sendall(
            hf.HeadersFrame(1, first, flags=["END_STREAM"]).serialize()
            + hf.ContinuationFrame(1, rest, flags=["END_HEADERS"]).serialize()
        )
        # Refused one way or another: a 431 / RST_STREAM for the stream, or a GOAWAY.
        deadline = time.monotonic() + 5
        while not (reader.resets or reader.headers or reader.closed.is_set()):
            assert time.monotonic() < deadline, "the bomb was neither answered nor refused"
            time.sleep(0.02)
        assert_serves(server, http2=True)
        grown = worker.peak_grown_mb()
        cpu = worker.cpu_used()
    sock.close()
    measured("hpack bomb", peak_mb=grown, cpu_s=cpu, goaway=reader.goaway, statuses=reader.statuses)
    assert grown < 16, f"peak RSS grew {grown:.1f} MB decoding the bomb (64 MB unbounded)"
    assert cpu < 3.0, f"the worker spent {cpu:.1f} s of CPU on a 20 KB header block"


def test_h2_hpack_table_size_bomb_is_a_compression_error(server):
    """A dynamic table size update to 1 GiB, past the 4,096 bytes the server allows."""
    sock = h2_open(server)
    reader = FrameReader(sock)
    update = hpack_int(1 << 30, 5, 0x20)  # dynamic table size update (RFC 7541 6.3)
    block = update + request_block(hpack.Encoder(), "/")
    sock.sendall(hf.HeadersFrame(1, block, flags=["END_HEADERS", "END_STREAM"]).serialize())
    assert reader.closed.wait(5), "the connection was never closed"
    # RFC 7541 4.2 makes it a decoding error; h2 reports it as PROTOCOL_ERROR.
    assert reader.goaway is not None and reader.goaway.error_code in (
        PROTOCOL_ERROR,
        COMPRESSION_ERROR,
    )
    assert reader.headers == 0
    sock.close()
    assert_serves(server, http2=True)


@pytest.mark.parametrize(
    "frame",
    [
        hf.SettingsFrame(0, settings={hf.SettingsFrame.MAX_CONCURRENT_STREAMS: 100}),
        hf.PingFrame(0, opaque_data=b"12345678"),
    ],
    ids=["settings", "ping"],
)
def test_h2_settings_and_ping_floods_meet_backpressure(server, frame):
    """Every SETTINGS and PING needs an ACK; a client that floods them and reads nothing
    must be stopped by the socket (h2 holds one pending ACK of each), not buffered."""
    worker = Worker(server)
    sock = h2_open(server)
    with worker:
        sent, blocked = until_blocked(sock, frame.serialize() * 1000, seconds=8)
        assert blocked, f"the server took {sent / MiB:.0f} MB of {frame.type} frames unread"
        idle = worker.idle_cpu()
        assert_serves(server, http2=True)
        grown = worker.grown_mb()
    sock.close()
    measured(f"{frame.type} flood", sent_mb=sent / MiB, idle_cpu=idle, rss_mb=grown)
    assert idle < 0.3, f"the worker burned {idle:.2f} s of CPU per second while blocked"
    # What was sent is bounded by the sockets' buffers; unread ACKs for all of it would
    # be about as large again.
    assert grown < 16, f"RSS grew {grown:.1f} MB after {sent / MiB:.1f} MB of frames"


def test_h2_zero_window_reader_holding_many_streams(server):
    """A client that grants no window opens 100 streams of 1 MiB responses and never
    reads a byte of body: each response waits at its backpressure mark, not in memory."""
    worker = Worker(server)
    calls_before = app_calls(server)
    sock = h2_open(server, settings={hf.SettingsFrame.INITIAL_WINDOW_SIZE: 0})
    reader = FrameReader(sock)
    encoder = hpack.Encoder()
    with worker:
        sock.sendall(
            b"".join(
                hf.HeadersFrame(
                    i, request_block(encoder, "/big"), flags=["END_HEADERS", "END_STREAM"]
                ).serialize()
                for i in range(1, 200, 2)
            )
        )
        deadline = time.monotonic() + 10
        while app_calls(server) - calls_before < 100:
            assert time.monotonic() < deadline, "the 100 streams never all reached the app"
            time.sleep(0.05)
        time.sleep(0.5)
        idle = worker.idle_cpu()
        assert_serves(server, http2=True)
        grown = worker.grown_mb()
        assert not reader.closed.is_set()
    sock.close()
    assert idle < 0.3, f"the worker burned {idle:.2f} s of CPU per second on held streams"
    # 100 MiB of responses were asked for. The streams share a 1 MiB queue budget
    # (src/asgi/exchange.rs: a hundred streams opened at once get marks summing to about
    # 4 MiB), and each holds at most two of the app's 64 KiB chunks beyond its mark (one
    # queued past it, one waiting for window): about 17 MiB, and we allow 20 (32 MiB
    # were held before the budget).
    measured("zero window", idle_cpu=idle, rss_mb=grown)
    assert grown < 20, f"RSS grew {grown:.1f} MB holding 100 zero-window streams"


UPGRADE = (
    b"GET / HTTP/1.1\r\nHost: h\r\nConnection: Upgrade, HTTP2-Settings\r\n"
    b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n"
)


def closed_within(sock: socket.socket, seconds: float) -> float:
    """Read until the server closes; returns how long that took."""
    start = time.monotonic()
    sock.settimeout(seconds)
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        raise AssertionError(f"still open after {seconds} s") from None
    except ConnectionResetError:
        pass
    return time.monotonic() - start


@pytest.mark.parametrize("part", ["request", "preface"])
def test_slow_h2c_upgrade_meets_the_header_timeout(server, part):
    """The Upgrade request trickled a byte at a time, or the HTTP/2 preface after the
    101 never finished: --timeout-request-header (1 s here) closes both."""
    worker = Worker(server)
    with worker, socket.create_connection((server.host, server.port), timeout=10) as sock:
        if part == "preface":
            sock.sendall(UPGRADE)
            assert sock.recv(65536).startswith(b"HTTP/1.1 101 ")
            trickle = PREFACE
        else:
            trickle = UPGRADE
        start = time.monotonic()
        try:
            for byte in trickle[:-1]:
                sock.sendall(bytes([byte]))
                time.sleep(0.1)
                if time.monotonic() - start > 5:
                    break
        except OSError:
            pass  # closed under us: what we want
        waited = time.monotonic() - start + closed_within(sock, 5)
        assert_serves(server)
        cpu = worker.cpu_used()
    measured(f"slow h2c {part}", held_s=waited, cpu_s=cpu)
    assert waited < 3.5, f"a trickled {part} was held {waited:.1f} s (timeout 1 s)"
    assert cpu < 1.0


# WebSocket on raw frames.


def ws_open(server: Server, deflate: bool = False) -> socket.socket:
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        "GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
    )
    if deflate:
        request += "Sec-WebSocket-Extensions: permessage-deflate\r\n"
    sock = socket.create_connection((server.host, server.port), timeout=10)
    sock.sendall((request + "\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)
        assert chunk, "closed during the WebSocket handshake"
        head += chunk
    assert head.startswith(b"HTTP/1.1 101 "), head
    assert (b"permessage-deflate" in head.lower()) == deflate
    return sock


def ws_frame(opcode: int, payload: bytes, fin: bool = True, rsv1: bool = False) -> bytes:
    """A client frame, masked with a zero key (so the payload goes as it is)."""
    first = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
    n = len(payload)
    if n < 126:
        length = bytes([0x80 | n])
    elif n < 65536:
        length = bytes([0x80 | 126]) + struct.pack("!H", n)
    else:
        length = bytes([0x80 | 127]) + struct.pack("!Q", n)
    return bytes([first]) + length + b"\0\0\0\0" + payload


def ws_close_code(sock: socket.socket, timeout: float = 5.0) -> int:
    """Read server frames until its close frame; return the close code."""
    sock.settimeout(timeout)
    buf = b""
    while True:
        while len(buf) >= 2:
            n, at = buf[1] & 0x7F, 2
            if n == 126:
                n, at = struct.unpack("!H", buf[2:4])[0], 4
            elif n == 127:
                n, at = struct.unpack("!Q", buf[2:10])[0], 10
            if len(buf) < at + n:
                break
            opcode, payload = buf[0] & 0x0F, buf[at : at + n]
            buf = buf[at + n :]
            if opcode == 0x8:
                return struct.unpack("!H", payload[:2])[0]
        data = sock.recv(1 << 20)
        assert data, "closed without a close frame"
        buf += data


@pytest.fixture(scope="module")
def deflate_bomb() -> bytes:
    """256 MiB of zeros as one raw-DEFLATE message: about 256 KB on the wire."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    zeros = bytes(MiB)
    data = b"".join(compressor.compress(zeros) for _ in range(256))
    data += compressor.flush(zlib.Z_SYNC_FLUSH)
    assert data.endswith(b"\x00\x00\xff\xff")
    return data[:-4]


def test_ws_deflate_bomb_is_stopped_while_inflating(server, deflate_bomb):
    assert len(deflate_bomb) < WS_MAX_SIZE  # the frame itself is within the limit
    worker = Worker(server)
    with worker, ws_open(server, deflate=True) as sock:
        sock.sendall(ws_frame(0x2, deflate_bomb, rsv1=True))
        assert ws_close_code(sock) == 1009
        assert_serves(server)
        peak = worker.peak_grown_mb()
        cpu = worker.cpu_used()
    measured("deflate bomb", peak_mb=peak, cpu_s=cpu)
    # Inflated first and checked after, the peak would be 256 MiB and more.
    assert peak < 16, f"peak RSS grew {peak:.1f} MB inflating the bomb"
    assert cpu < 2.0, f"the worker spent {cpu:.1f} s of CPU inflating the bomb"


def test_ws_fragment_flood_is_bounded_by_ws_max_size(server):
    """A message in one-byte continuation frames, past --ws-max-size (1 MiB here)."""
    worker = Worker(server)
    one = ws_frame(0x0, b"a", fin=False)
    with worker, ws_open(server) as sock:
        sock.sendall(ws_frame(0x1, b"a", fin=False))
        sent, _ = until_blocked(sock, one * 65536, seconds=10)
        assert ws_close_code(sock) == 1009
        assert_serves(server)
        peak = worker.peak_grown_mb()
        cpu = worker.cpu_used()
    measured("fragment flood", fragments=sent // len(one), peak_mb=peak, cpu_s=cpu)
    assert sent // len(one) >= WS_MAX_SIZE, f"closed after {sent // len(one)} fragments"
    assert peak < 16, f"peak RSS grew {peak:.1f} MB for a 1 MiB message"
    assert cpu < 5.0, f"the worker spent {cpu:.1f} s of CPU on a million frames"


def test_ws_ping_flood_meets_backpressure(server):
    """125-byte pings as fast as the socket takes them, and no pong ever read: the server
    must stop reading once its pongs back up, not queue them without end."""
    worker = Worker(server)
    ping = ws_frame(0x9, b"p" * 125)
    with worker, ws_open(server) as sock:
        sent, blocked = until_blocked(sock, ping * 1000, seconds=8)
        assert blocked, f"the server read {sent / MiB:.0f} MB of pings with no pong read"
        idle = worker.idle_cpu()
        assert_serves(server)
        grown = worker.grown_mb()
        # The pongs are there when the client reads at last.
        sock.settimeout(5)
        first = sock.recv(2 + 125)
        assert first[:2] == b"\x8a\x7d"
    measured("ws ping flood", sent_mb=sent / MiB, idle_cpu=idle, rss_mb=grown)
    assert idle < 0.3, f"the worker burned {idle:.2f} s of CPU per second while blocked"
    assert grown < 16, f"RSS grew {grown:.1f} MB after {sent / MiB:.1f} MB of pings"


@pytest.mark.parametrize("opcode", [0x8, 0x9, 0xA], ids=["close", "ping", "pong"])
def test_ws_control_frame_over_125_bytes_is_a_protocol_error(server, opcode):
    with ws_open(server) as sock:
        sock.sendall(ws_frame(opcode, b"x" * 126))
        assert ws_close_code(sock) == 1002
        closed_within(sock, 5)
    assert_serves(server)


# HTTP/1.1 on raw bytes.


def test_h1_pipelining_flood_meets_backpressure(server):
    """Pipelined requests as fast as the socket takes them, no response ever read."""
    worker = Worker(server)
    calls_before = app_calls(server)
    request = b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"
    with worker, socket.create_connection((server.host, server.port)) as sock:
        sent, blocked = until_blocked(sock, request * 10_000, seconds=10)
        assert blocked, f"the server took {sent / MiB:.0f} MB of requests with none read"
        # The kernel's buffers hold megabytes of requests and of answers: the worker
        # works through what it already has (real requests, answered) for a second or
        # two, then stops because the answers can't go out.
        deadline, served = time.monotonic() + 10, -1
        while served != (served := app_calls(server)):
            assert time.monotonic() < deadline, "the worker never stopped serving the flood"
            time.sleep(0.5)
        idle = worker.idle_cpu()
        assert_serves(server)
        grown = worker.grown_mb()
    served -= calls_before + 1  # the +1: assert_serves
    measured("pipelining", sent=sent // len(request), served=served, idle_cpu=idle, rss_mb=grown)
    assert idle < 0.3, f"the worker burned {idle:.2f} s of CPU per second while blocked"
    assert grown < 16, f"RSS grew {grown:.1f} MB after {sent / MiB:.1f} MB of requests"
    # Requests are answered only as fast as the answers can go out (a run here: 39,000
    # of 180,000 sent).
    assert served < sent // len(request) // 2, f"{served} served of {sent // len(request)} sent"


# The issue asks for 1,000; 300 keeps the test within its time on a shared CI machine.
# FERROCORN_SLOW_READERS=1000 runs the full count (docs/reliability.md has both).
SLOW_READERS = int(os.environ.get("FERROCORN_SLOW_READERS", "300"))


def test_h1_slow_readers_at_many_connections(server):
    """SLOW_READERS connections each ask for 1 MiB and read nothing."""
    worker = Worker(server)
    socks = []
    with worker:
        try:
            for _ in range(SLOW_READERS):
                sock = socket.socket()
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                sock.connect((server.host, server.port))
                sock.sendall(b"GET /big HTTP/1.1\r\nHost: h\r\n\r\n")
                socks.append(sock)
            # The app produces up to its backpressure mark for each connection (a
            # second or more of real work for 1,000), then everything waits.
            deadline = time.monotonic() + 10
            while (idle := worker.idle_cpu()) >= 0.05 and time.monotonic() < deadline:
                pass
            assert_serves(server, within=3.0)
            grown = worker.grown_mb()
        finally:
            for sock in socks:
                sock.close()
    assert idle < 0.3, f"the worker burned {idle:.2f} s of CPU per second on slow readers"
    # 300 MiB were asked for. Each connection holds at most the HTTP/1 send()
    # backpressure mark (1 MiB, HTTP1_WATER) and the encoded write-ahead (256 KiB):
    # a bounded cost per connection, not per response byte (a run here: 811 KB).
    per_conn_kb = grown * 1024 / SLOW_READERS
    measured("slow readers", connections=SLOW_READERS, per_conn_kb=per_conn_kb, idle_cpu=idle)
    assert per_conn_kb < 1400, f"{per_conn_kb:.0f} KB per slow reader"


def post_head(length: int) -> bytes:
    return f"POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: {length}\r\n\r\n".encode()


def test_h1_trickled_body_meets_the_body_timeout(server):
    """--timeout-request-body (1 s here) is the longest the client may stay silent
    while the app waits for body bytes: a byte every 0.4 s keeps the request going (it
    is the time between bytes that is bounded, not the total), a pause of 1 s ends it."""
    worker = Worker(server)
    with worker:
        with socket.create_connection((server.host, server.port), timeout=10) as sock:
            sock.sendall(post_head(5))
            for byte in b"abcde":
                time.sleep(0.4)
                sock.sendall(bytes([byte]))
            answer = sock.recv(65536)
        assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b"abcde")
        with socket.create_connection((server.host, server.port), timeout=10) as sock:
            sock.sendall(post_head(5) + b"a")
            start = time.monotonic()
            sock.settimeout(5)
            answer = sock.recv(65536)
            waited = time.monotonic() - start
            assert closed_within(sock, 5) < 1
        assert answer.startswith(b"HTTP/1.1 408 ")
        assert 0.8 < waited < 3.0, f"cut after {waited:.1f} s of silence (timeout 1 s)"
        assert_serves(server)
        cpu = worker.cpu_used()
    measured("trickled body", cut_after_s=waited, cpu_s=cpu)
    assert cpu < 1.0, f"the worker spent {cpu:.1f} s of CPU on two trickling clients"


LINE, FIELDS, FIELD_SIZE, BODY = 200, 10, 300, 100


@pytest.fixture(scope="module")
def limited():
    with Server(
        APP,
        "--workers",
        "1",
        "--limit-request-line",
        str(LINE),
        "--limit-request-fields",
        str(FIELDS),
        "--limit-request-field-size",
        str(FIELD_SIZE),
        "--limit-request-body",
        str(BODY),
    ) as s:
        yield s


def exchange(server: Server, data: bytes) -> bytes:
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        sock.sendall(data)
        sock.settimeout(5)
        return sock.recv(65536)


def request_line_of(length: int) -> bytes:
    # "GET " + target + " HTTP/1.1": the limit counts the line without its CRLF.
    target = "/" + "a" * (length - len("GET / HTTP/1.1"))
    line = f"GET {target} HTTP/1.1".encode()
    assert len(line) == length
    return line


@pytest.mark.parametrize("over", [0, 1], ids=["at-limit", "over-limit"])
def test_h1_request_line_limit_is_exact(limited, over):
    answer = exchange(limited, request_line_of(LINE + over) + b"\r\nHost: h\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 414 " if over else b"HTTP/1.1 200 "), answer[:40]


@pytest.mark.parametrize("over", [0, 1], ids=["at-limit", "over-limit"])
def test_h1_header_field_size_limit_is_exact(limited, over):
    # The limit counts "name: value" without the CRLF.
    value = "v" * (FIELD_SIZE + over - len("X-Field: "))
    answer = exchange(limited, f"GET / HTTP/1.1\r\nHost: h\r\nX-Field: {value}\r\n\r\n".encode())
    assert answer.startswith(b"HTTP/1.1 431 " if over else b"HTTP/1.1 200 "), answer[:40]


@pytest.mark.parametrize("over", [0, 1], ids=["at-limit", "over-limit"])
def test_h1_header_count_limit_is_exact(limited, over):
    # Host counts as one of the fields.
    fields = "".join(f"X-F{i}: v\r\n" for i in range(FIELDS - 1 + over))
    answer = exchange(limited, f"GET / HTTP/1.1\r\nHost: h\r\n{fields}\r\n".encode())
    assert answer.startswith(b"HTTP/1.1 431 " if over else b"HTTP/1.1 200 "), answer[:40]


@pytest.mark.parametrize("over", [0, 1], ids=["at-limit", "over-limit"])
@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_h1_body_limit_is_exact(limited, over, framing):
    body = b"b" * (BODY + over)
    if framing == "chunked":
        head = b"POST /echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
        data = head + b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    else:
        data = post_head(len(body)) + body
    answer = exchange(limited, data)
    if over:
        assert answer.startswith(b"HTTP/1.1 413 "), answer[:40]
    else:
        assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(body), answer[:40]


def test_h2_stalled_request_bodies_meet_the_body_timeout(server):
    """Slow POST on HTTP/2: streams whose body never comes would hold their app calls
    (and the connection, which isn't idle while streams are open) forever."""
    sock = h2_open(server)
    reader = FrameReader(sock)
    encoder = hpack.Encoder()
    start = time.monotonic()
    fields = [(":method", "POST"), (":scheme", "http"), (":authority", "t"), (":path", "/echo")]
    for stream in range(1, 20, 2):
        block = encoder.encode([*fields, ("content-length", "5")])
        sock.sendall(hf.HeadersFrame(stream, block, flags=["END_HEADERS"]).serialize())
    sock.sendall(hf.DataFrame(1, b"ab").serialize())  # a start, then silence
    deadline = time.monotonic() + 5
    while reader.statuses.count(b"408") < 10:
        assert time.monotonic() < deadline, f"answered so far: {reader.statuses}"
        time.sleep(0.05)
    waited = time.monotonic() - start
    measured("h2 stalled bodies", ended_after_s=waited)
    assert 0.8 < waited < 3.5, f"stalled bodies ended after {waited:.1f} s (timeout 1 s)"
    assert_serves(server, http2=True)
    sock.close()
