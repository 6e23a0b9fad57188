"""Load from persistent connections that never retry, counting every failed request.

Used by tests/test_drain.py and bench/restarts.py (the zero-failure restart table).
Each client thread keeps one connection and sends requests on it back to back:

- HTTP/1.1 (http.client): a response with `connection: close` makes the client open a
  new connection for its next request; that is how a server asks for it, not a retry.
  Any exception (RemoteDisconnected, ConnectionResetError, BrokenPipeError, a refused
  connect, a timeout) or a status other than 200 counts as one failed request, and
  the request is never sent again.
- HTTP/2 (a small client on hyperframe + hpack, the `h2` package's own building
  blocks): keeps `depth` streams open per connection. A GOAWAY stops new streams on the
  connection; streams above its last stream id, streams reset by the server, and
  streams still open when the connection ends count as failed; once no stream is left
  the client opens a new connection. The `h2` package's connection object is not used
  because it refuses every frame after the first GOAWAY, so it cannot finish the
  streams that a graceful GOAWAY (last stream id 2^31-1) lets finish.
"""

from __future__ import annotations

import collections
import http.client
import socket
import threading
import time
from dataclasses import dataclass, field

import hpack
from hyperframe.frame import (
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

REQUEST_TIMEOUT = 10.0
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


@dataclass
class Tally:
    """What the clients saw, added up across threads."""

    ok: int = 0
    failed: int = 0
    # failure kind -> count, e.g. "RemoteDisconnected": 3
    errors: collections.Counter = field(default_factory=collections.Counter)
    # responses that asked the client to reconnect (connection: close / GOAWAY)
    closes_announced: int = 0
    connects: int = 0
    # distinct response bodies (drain_app answers its pid: which workers served)
    bodies: set = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def success(self) -> None:
        with self.lock:
            self.ok += 1

    def body(self, data: bytes) -> None:
        if len(self.bodies) < 1000:
            with self.lock:
                self.bodies.add(bytes(data))

    def failure(self, kind: str) -> None:
        with self.lock:
            self.failed += 1
            self.errors[kind] += 1

    def count(self, name: str) -> None:
        with self.lock:
            setattr(self, name, getattr(self, name) + 1)

    def summary(self) -> dict:
        with self.lock:
            return {
                "ok": self.ok,
                "failed": self.failed,
                "errors": dict(self.errors),
                "closes_announced": self.closes_announced,
                "connects": self.connects,
                "servers_seen": len(self.bodies),
            }


def http1_client(host: str, port: int, path: str, stop: threading.Event, tally: Tally) -> None:
    conn = None
    while not stop.is_set():
        if conn is None:
            conn = http.client.HTTPConnection(host, port, timeout=REQUEST_TIMEOUT)
            tally.count("connects")
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            tally.body(response.read())
        except Exception as e:  # every way a request can be lost counts
            tally.failure(type(e).__name__)
            conn.close()
            conn = None
            continue
        if response.status == 200:
            tally.success()
        else:
            tally.failure(f"status {response.status}")
        if response.will_close:
            tally.count("closes_announced")
            conn.close()
            conn = None
    if conn is not None:
        conn.close()


class H2Connection:
    """One HTTP/2 connection by prior knowledge (h2c), `depth` streams at a time."""

    def __init__(self, host: str, port: int, path: str, tally: Tally):
        self.sock = socket.create_connection((host, port), timeout=REQUEST_TIMEOUT)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.tally = tally
        self.encoder = hpack.Encoder()
        self.decoder = hpack.Decoder()
        self.headers = [
            (":method", "GET"),
            (":scheme", "http"),
            (":authority", f"{host}:{port}"),
            (":path", path),
        ]
        self.next_id = 1
        self.open: dict[int, int | None] = {}  # stream id -> status once known
        self.going_away = False
        self.buf = b""
        self.sock.sendall(H2_PREFACE + SettingsFrame(0).serialize())

    def send_request(self) -> None:
        frame = HeadersFrame(self.next_id)
        frame.data = self.encoder.encode(self.headers)
        frame.flags.add("END_HEADERS")
        frame.flags.add("END_STREAM")
        self.sock.sendall(frame.serialize())
        self.open[self.next_id] = None
        self.next_id += 2

    def _finish(self, stream_id: int) -> None:
        status = self.open.pop(stream_id, None)
        if status == 200:
            self.tally.success()
        else:
            self.tally.failure(f"status {status}")

    def _fail(self, stream_id: int, kind: str) -> None:
        if self.open.pop(stream_id, "gone") != "gone":
            self.tally.failure(kind)

    def fail_all(self, kind: str) -> None:
        for stream_id in list(self.open):
            self._fail(stream_id, kind)

    def read_frames(self) -> bool:
        """Read and handle what arrived; False once the connection is gone."""
        try:
            chunk = self.sock.recv(65536)
        except OSError as e:
            self.fail_all(type(e).__name__)
            return False
        if not chunk:
            self.fail_all("connection closed")
            return False
        self.buf += chunk
        while len(self.buf) >= 9:
            frame, length = Frame.parse_frame_header(memoryview(self.buf[:9]))
            if len(self.buf) < 9 + length:
                break
            frame.parse_body(memoryview(self.buf[9 : 9 + length]))
            self.buf = self.buf[9 + length :]
            self.handle(frame)
        return True

    def _control(self, data: bytes) -> None:
        """Send a frame that answers the server (an ACK, a window update). The server
        may have closed already after its last stream; what that loses shows up on
        the next read, as failed streams if any were open."""
        try:
            self.sock.sendall(data)
        except OSError:
            pass

    def handle(self, frame: Frame) -> None:
        sid = frame.stream_id
        if isinstance(frame, SettingsFrame):
            if "ACK" not in frame.flags:
                self._control(SettingsFrame(0, flags=["ACK"]).serialize())
        elif isinstance(frame, PingFrame):
            # The server's graceful GOAWAY waits for this answer (one round trip).
            if "ACK" not in frame.flags:
                self._control(
                    PingFrame(0, opaque_data=frame.opaque_data, flags=["ACK"]).serialize()
                )
        elif isinstance(frame, HeadersFrame):
            for name, value in self.decoder.decode(frame.data):
                if name in (":status", b":status") and sid in self.open:
                    self.open[sid] = int(value)
            if "END_STREAM" in frame.flags:
                self._finish(sid)
        elif isinstance(frame, DataFrame):
            if frame.data:
                self.tally.body(frame.data)
            if frame.flow_controlled_length:
                n = frame.flow_controlled_length
                update = WindowUpdateFrame(0, window_increment=n).serialize()
                if "END_STREAM" not in frame.flags:
                    update += WindowUpdateFrame(sid, window_increment=n).serialize()
                self._control(update)
            if "END_STREAM" in frame.flags:
                self._finish(sid)
        elif isinstance(frame, RstStreamFrame):
            self._fail(sid, f"RST_STREAM {frame.error_code}")
        elif isinstance(frame, GoAwayFrame):
            if not self.going_away:
                self.tally.count("closes_announced")
            self.going_away = True
            for stream_id in list(self.open):
                if stream_id > frame.last_stream_id or frame.error_code != 0:
                    self._fail(stream_id, f"GOAWAY {frame.error_code} refused it")

    def close(self) -> None:
        self.sock.close()


def h2_client(
    host: str, port: int, path: str, stop: threading.Event, tally: Tally, depth: int = 4
) -> None:
    try:
        _h2_client(host, port, path, stop, tally, depth)
    except Exception as e:
        # A bug of this client must show, not pass for a clean run.
        tally.failure(f"client error {e!r}")
        raise


def _h2_client(host: str, port: int, path: str, stop: threading.Event, tally: Tally, depth: int):
    conn = None
    while True:
        if conn is None:
            if stop.is_set():
                return
            try:
                conn = H2Connection(host, port, path, tally)
            except OSError as e:
                tally.failure(type(e).__name__)
                time.sleep(0.01)
                continue
            tally.count("connects")
        try:
            while not conn.going_away and not stop.is_set() and len(conn.open) < depth:
                conn.send_request()
        except OSError as e:
            conn.fail_all(type(e).__name__)
            conn.close()
            conn = None
            continue
        if not conn.open and (conn.going_away or stop.is_set()):
            conn.close()
            conn = None
            continue
        if not conn.read_frames():
            conn.close()
            conn = None


def run_load(
    host: str,
    port: int,
    *,
    http1: int = 8,
    http2: int = 0,
    duration: float = 10.0,
    path: str = "/",
    during=None,
) -> dict[str, dict]:
    """Load the server for `duration` seconds from `http1` HTTP/1.1 and `http2` HTTP/2
    connections; `during()` runs meanwhile (sends HUPs, say) in this thread. Returns a
    summary per protocol."""
    stop = threading.Event()
    tallies = {"http1": Tally(), "http2": Tally()}
    threads = [
        threading.Thread(target=http1_client, args=(host, port, path, stop, tallies["http1"]))
        for _ in range(http1)
    ] + [
        threading.Thread(target=h2_client, args=(host, port, path, stop, tallies["http2"]))
        for _ in range(http2)
    ]
    started = time.monotonic()
    for t in threads:
        t.daemon = True
        t.start()
    try:
        if during is not None:
            during()
        left = duration - (time.monotonic() - started)
        if left > 0:
            time.sleep(left)
    finally:
        stop.set()
        for t in threads:
            t.join(REQUEST_TIMEOUT + 5)
    return {name: t.summary() for name, t in tallies.items() if (http1, http2)[name == "http2"]}
