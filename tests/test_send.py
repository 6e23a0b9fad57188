"""Response shapes (list headers, bytes-like bodies, an app's own chunked framing) and
the response extensions (pathsend, early hints, trailers) over plain HTTP/1.1 and
cleartext HTTP/2, on raw sockets and h2 frames where httpx would hide the wire. The
httpx checks in core_checks.SEND_CHECKS also run over TLS (test_tls.py) and HTTP/2
(test_http2.py)."""

import os
import socket
import time

import h2.config
import h2.connection
import h2.events
import httpx
import pytest

from tests.core_checks import SEND_CHECKS
from tests.server import Server, raw_exchange

APP = "protocols:app"


@pytest.fixture(scope="module")
def server():
    # One worker: /record shows what the app's earlier requests sent.
    with Server(APP, "--workers", "1") as s:
        yield s


@pytest.fixture
def client(server):
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


@pytest.mark.parametrize("check", SEND_CHECKS, ids=lambda f: f.__name__[6:])
def test_send_over_http1(check, client, server):
    check(client, server)


def split_head(raw: bytes) -> tuple[bytes, dict[str, list[str]], bytes]:
    head, _, rest = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    fields: dict[str, list[str]] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        fields.setdefault(name.strip().lower(), []).append(value.strip())
    return lines[0].encode(), fields, rest


def dechunk(data: bytes) -> tuple[bytes, bytes, bytes]:
    """Parse chunked framing strictly: (body, trailer section, what follows)."""
    body = b""
    while True:
        size_line, sep, data = data.partition(b"\r\n")
        assert sep, "chunk size line never ended"
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            trailers, sep, rest = (
                data.partition(b"\r\n\r\n")
                if not data.startswith(b"\r\n")
                else (b"", b"", data[2:])
            )
            return body, trailers, rest
        assert data[size : size + 2] == b"\r\n", "chunk data not followed by CRLF"
        body += data[:size]
        data = data[size + 2 :]


def get(server, path: str, extra: bytes = b"", version: bytes = b"HTTP/1.1") -> bytes:
    with server.connect() as sock:
        return raw_exchange(
            sock,
            b"GET "
            + path.encode()
            + b" "
            + version
            + b"\r\nHost: t\r\n"
            + extra
            + b"Connection: close\r\n\r\n",
        )


def test_app_chunked_and_length_is_chunk_encoded(server):
    status, fields, rest = split_head(get(server, "/send/te-and-length"))
    assert status == b"HTTP/1.1 200 OK"
    assert fields["transfer-encoding"] == ["chunked"]
    assert "content-length" not in fields  # never both (RFC 9112 6.3)
    body, trailers, after = dechunk(rest)
    assert body == b"hello world"
    assert after == b"<EOF>"
    # HTTP/1.0 can't read chunks: the app's length delimits the body.
    status, fields, rest = split_head(get(server, "/send/te-and-length", version=b"HTTP/1.0"))
    assert "transfer-encoding" not in fields
    assert fields["content-length"] == ["11"]
    assert rest == b"hello world<EOF>"


def test_app_chunked_keeps_the_connection_in_step(server):
    with server.connect() as sock:
        raw = raw_exchange(
            sock,
            b"GET /send/te-and-length HTTP/1.1\r\nHost: t\r\n\r\n"
            b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        )
    _, _, rest = split_head(raw)
    body, _, after = dechunk(rest)
    assert body == b"hello world"
    assert after.startswith(b"HTTP/1.1 200 OK") and after.endswith(b"Hello, world!<EOF>")


def test_invalid_body_after_start_closes_once_logged(server):
    raw = get(server, "/send/bad-body")
    status, fields, rest = split_head(raw)
    assert status == b"HTTP/1.1 200 OK"
    assert rest.endswith(b"<EOF>")
    assert not rest.replace(b"<EOF>", b"").endswith(b"0\r\n\r\n")  # never looks complete
    log = server.wait_for_log(r"must be bytes, bytearray or memoryview, not str")
    assert log
    time.sleep(0.2)
    assert server.stderr_text().count("must be bytes, bytearray or memoryview, not str") == 1


def test_pathsend_over_http1_raw(server, tmp_path):
    data = os.urandom(3 * 1024 * 1024 + 5)
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    status, fields, rest = split_head(get(server, f"/send/pathsend?file={path}"))
    assert status == b"HTTP/1.1 200 OK"
    assert fields["content-length"] == [str(len(data))]
    assert rest == data + b"<EOF>"
    # A head that went out before the file (chunked): one chunk carries the file.
    status, fields, rest = split_head(get(server, f"/send/pathsend?file={path}&wait=1"))
    assert fields["transfer-encoding"] == ["chunked"]
    body, _, after = dechunk(rest)
    assert body == data and after == b"<EOF>"


def test_pathsend_keep_alive_then_next_request(server, tmp_path):
    path = tmp_path / "small.txt"
    path.write_bytes(b"file body")
    with server.connect() as sock:
        raw = raw_exchange(
            sock,
            f"GET /send/starlette/file?file={path} HTTP/1.1\r\nHost: t\r\n\r\n".encode()
            + b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        )
    _, fields, rest = split_head(raw)
    assert fields["content-length"] == ["9"]
    assert rest.startswith(b"file bodyHTTP/1.1 200 OK")
    assert rest.endswith(b"Hello, world!<EOF>")


def test_pathsend_file_shorter_than_length(server, tmp_path):
    path = tmp_path / "short.bin"
    path.write_bytes(b"x" * 100)
    # Known before the head goes out: a clean 500.
    status, _, _ = split_head(get(server, f"/send/pathsend?file={path}&cl=200"))
    assert status == b"HTTP/1.1 500 Internal Server Error"
    server.wait_for_log(r"short.bin\" has 100 bytes, fewer than its content-length 200")
    # After the head went out: the connection closes with the body incomplete.
    status, fields, rest = split_head(get(server, f"/send/pathsend?file={path}&cl=300&wait=1"))
    assert status == b"HTTP/1.1 200 OK"
    assert fields["content-length"] == ["300"]
    # The file goes out, then the connection closes: 100 of 300 bytes, visibly short.
    assert rest == b"x" * 100 + b"<EOF>"
    server.wait_for_log(r"Response content shorter than Content-Length")


def test_early_hints_http1(server):
    raw = get(server, "/send/starlette/early-hints")
    hint, _, final = raw.partition(b"\r\n\r\n")
    assert hint.startswith(b"HTTP/1.1 103 Early Hints\r\n")
    assert b"link: </style.css>; rel=preload; as=style" in hint
    assert b"link: </app.js>; rel=preload" in hint
    status, fields, rest = split_head(final)
    assert status == b"HTTP/1.1 200 OK"
    assert rest == b"after hints<EOF>"
    raw = get(server, "/send/early-hints")
    assert raw.startswith(
        b"HTTP/1.1 103 Early Hints\r\nlink: </a.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK"
    )
    # HTTP/1.0 clients never see a 1xx.
    raw = get(server, "/send/early-hints", version=b"HTTP/1.0")
    assert raw.startswith(b"HTTP/1.0 200 OK") and b"103" not in raw


def test_trailers_http1(server):
    status, fields, rest = split_head(get(server, "/send/trailers", extra=b"TE: trailers\r\n"))
    assert fields["transfer-encoding"] == ["chunked"]
    body, trailers, after = dechunk(rest)
    assert body == b"part one, part two"
    assert trailers == b"x-checksum: abc\r\nx-count: 2"
    assert after == b"<EOF>"
    # A client that didn't say TE: trailers gets the body alone.
    status, fields, rest = split_head(get(server, "/send/trailers"))
    body, trailers, after = dechunk(rest)
    assert body == b"part one, part two"
    assert trailers == b""
    assert after == b"<EOF>"


class H2Client:
    def __init__(self, server):
        self.sock = socket.create_connection((server.host, server.port), timeout=10)
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.conn.initiate_connection()
        self.sock.sendall(self.conn.data_to_send())

    def get(self, path: str, extra=()) -> dict:
        stream = self.conn.get_next_available_stream_id()
        headers = [(":method", "GET"), (":scheme", "http"), (":authority", "t"), (":path", path)]
        self.conn.send_headers(stream, headers + list(extra), end_stream=True)
        self.sock.sendall(self.conn.data_to_send())
        result = {"informational": [], "body": b"", "trailers": None}
        deadline = time.monotonic() + 10
        while "ended" not in result:
            assert time.monotonic() < deadline, result
            data = self.sock.recv(1 << 20)
            assert data, "connection closed"
            for event in self.conn.receive_data(data):
                if getattr(event, "stream_id", None) != stream:
                    continue
                if isinstance(event, h2.events.InformationalResponseReceived):
                    result["informational"].append(list(event.headers))
                elif isinstance(event, h2.events.ResponseReceived):
                    result["headers"] = dict(event.headers)
                elif isinstance(event, h2.events.DataReceived):
                    result["body"] += event.data
                    self.conn.acknowledge_received_data(event.flow_controlled_length, stream)
                elif isinstance(event, h2.events.TrailersReceived):
                    result["trailers"] = list(event.headers)
                elif isinstance(event, h2.events.StreamEnded):
                    result["ended"] = True
                elif isinstance(event, h2.events.StreamReset):
                    result["ended"] = f"reset {event.error_code}"
            self.sock.sendall(self.conn.data_to_send())
        return result

    def close(self):
        self.sock.close()


def test_early_hints_h2(server):
    c = H2Client(server)
    try:
        r = c.get("/send/starlette/early-hints")
        assert len(r["informational"]) == 1
        hint = r["informational"][0]
        assert (b":status", b"103") in hint
        links = [value for name, value in hint if name == b"link"]
        assert links == [b"</style.css>; rel=preload; as=style", b"</app.js>; rel=preload"]
        assert r["headers"][b":status"] == b"200"
        assert r["body"] == b"after hints"
    finally:
        c.close()


def test_trailers_h2(server):
    c = H2Client(server)
    try:
        r = c.get("/send/trailers", extra=[("te", "trailers")])
        assert r["ended"] is True
        assert r["body"] == b"part one, part two"
        assert r["trailers"] == [(b"x-checksum", b"abc"), (b"x-count", b"2")]
    finally:
        c.close()


def test_app_chunked_h2(server):
    c = H2Client(server)
    try:
        r = c.get("/send/te-and-length")
        assert b"transfer-encoding" not in r["headers"]
        # The app's own length is dropped with its TE; ours, when we know it, is right.
        assert r["headers"].get(b"content-length", b"11") == b"11"
        assert r["body"] == b"hello world"
    finally:
        c.close()


def test_pathsend_h2_big_file(server, tmp_path):
    data = os.urandom(5 * 1024 * 1024 + 3)
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    c = H2Client(server)
    try:
        r = c.get(f"/send/starlette/file?file={path}")
        assert r["ended"] is True
        assert r["headers"][b"content-length"] == str(len(data)).encode()
        assert r["body"] == data
    finally:
        c.close()


def thread_names(pid: int) -> list[str]:
    names = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/comm") as f:
                names.append(f.read().strip())
        except OSError:
            pass
    return names


# A sysfs file claims 4096 bytes and holds a few: the file "fails" after the head.
SHORT_FILE = "/sys/devices/system/cpu/online"


@pytest.mark.skipif(not os.path.isfile(SHORT_FILE), reason="no sysfs")
def test_pathsend_file_failing_after_the_head_closes_logged_once(server):
    before = server.stderr_text().count(f'sending "{SHORT_FILE}" failed')
    for query in ("", "&wait=1"):  # content-length framing, then chunked
        status, fields, rest = split_head(get(server, f"/send/pathsend?file={SHORT_FILE}{query}"))
        assert status == b"HTTP/1.1 200 OK"
        assert rest.endswith(b"<EOF>")
        if "content-length" in fields:
            assert fields["content-length"] == ["4096"]
            assert len(rest) - len(b"<EOF>") < 4096
        else:
            assert not rest.replace(b"<EOF>", b"").endswith(b"0\r\n\r\n")
    # HTTP/2 reads the file in pieces: the stream is reset, the connection lives on.
    c = H2Client(server)
    try:
        assert c.get(f"/send/pathsend?file={SHORT_FILE}")["ended"] == "reset 2"
        assert c.get("/")["body"] == b"Hello, world!"
    finally:
        c.close()
    time.sleep(0.3)
    logged = server.stderr_text().count(f'sending "{SHORT_FILE}" failed')
    assert logged - before == 3  # once per response


# tokio's blocking-pool threads, by the names tokio versions give them.
BLOCKING_THREADS = {"tokio-rt-worker", "tokio-runtime-w"}


def test_pathsend_plain_http1_reads_nothing_in_user_space(tmp_path):
    """Over plain TCP the file goes through sendfile(2): no blocking-pool thread is ever
    started to read it; over HTTP/2 the file is read in pieces on that pool."""
    data = os.urandom(2 * 1024 * 1024)
    path = tmp_path / "plain.bin"
    path.write_bytes(data)
    with Server(APP, "--workers", "1") as server:  # fresh: no pool thread yet
        (worker,) = server.worker_pids()
        for _ in range(3):
            status, _, rest = split_head(get(server, f"/send/starlette/file?file={path}"))
            assert rest == data + b"<EOF>"
        assert not BLOCKING_THREADS & set(thread_names(worker))
        c = H2Client(server)
        try:
            assert c.get(f"/send/starlette/file?file={path}")["body"] == data
        finally:
            c.close()
        assert BLOCKING_THREADS & set(thread_names(worker))


def test_worker_never_panicked(server):
    assert "panicked" not in server.stderr_text()
    assert server.proc.poll() is None
