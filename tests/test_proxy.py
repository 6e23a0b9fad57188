"""Running behind proxies (docs/proxies.md), against real servers: forwarded headers
(X-Forwarded-*, RFC 7239 Forwarded) resolved into the scope's client, scheme and host
and the access log, and the PROXY protocol v1/v2 sent from raw sockets, in front of
HTTP/1.1, HTTP/2 and TLS.

The test client always connects from 127.0.0.1 (or ::1, or a Unix socket): servers
whose --forwarded-allow-ips leaves that out show what an untrusted peer gets."""

from __future__ import annotations

import json
import re
import socket
import ssl
import struct
import time

import h2.config
import h2.connection
import h2.events
import httpx
import pytest
import trustme
from websockets.sync.client import connect

from tests.server import Server, raw_exchange, run_to_exit

APP = "proxy_echo:app"
PEER = "<peer>"  # the expected client is the connecting socket itself
HOST = "internal:8000"  # the Host header every request sends


def parse_response(raw: bytes) -> dict:
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), raw
    return json.loads(body)


def get(target, headers=(), prefix: bytes = b"", family=socket.AF_INET) -> tuple[dict, tuple]:
    """One GET over a fresh connection; `target` is a Server or a Unix socket path.
    Returns the app's echo and the client socket's own address."""
    if isinstance(target, Server):
        sock = socket.create_connection((target.host, target.port), timeout=5)
    else:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(5)
        sock.connect(target)
    with sock:
        lines = [b"GET / HTTP/1.1", f"Host: {HOST}".encode(), b"Connection: close"]
        lines += [f"{k}: {v}".encode("latin-1") for k, v in headers]
        raw = raw_exchange(sock, prefix + b"\r\n".join(lines) + b"\r\n\r\n", wait=5)
        return parse_response(raw.removesuffix(b"<EOF>")), sock.getsockname()


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """Every configuration the resolution table uses, started once."""
    tmp = tmp_path_factory.mktemp("uds")
    specs = {
        "default": [],
        "networks": [
            "--forwarded-allow-ips",
            "127.0.0.1, 10.0.0.0/8, 2001:db8::/32, proxy-name",
            "--forwarded-host",
        ],
        "untrusted": ["--forwarded-allow-ips", "10.0.0.1"],
        "star": ["--forwarded-allow-ips", "*"],
        "off": ["--no-proxy-headers"],
        "v6": ["--host", "::1"],
        "v6-untrusted": ["--host", "::1", "--forwarded-allow-ips", "127.0.0.1"],
        "uds": ["--uds", str(tmp / "default.sock")],
        "uds-unix": ["--uds", str(tmp / "unix.sock"), "--forwarded-allow-ips", "unix:"],
        "uds-path": [
            "--uds",
            str(tmp / "path.sock"),
            "--forwarded-allow-ips",
            str(tmp / "path.sock"),
        ],
    }
    running = {}
    try:
        for name, args in specs.items():
            running[name] = Server(APP, *args)
        for server in running.values():
            server.start()
        for name, args in specs.items():
            if "--uds" in args:
                running[name].path = args[args.index("--uds") + 1]
        yield running
    finally:
        for server in running.values():
            server.stop()


# (server, request headers, client, scheme, host). PEER: the connecting socket itself.
# XFF: X-Forwarded-For, XFP: X-Forwarded-Proto, XFH: X-Forwarded-Host.
XFF, XFP, XFH, FWD = "X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", "Forwarded"
TABLE = [
    # --- the default trust list (127.0.0.1, ::1): the test client is a trusted proxy
    ("default", [], PEER, "http", HOST),
    ("default", [(XFF, "1.2.3.4")], ["1.2.3.4", 0], "http", HOST),
    ("default", [(XFF, "1.2.3.4:5678")], ["1.2.3.4", 5678], "http", HOST),
    ("default", [(XFF, "[2001:db8::1]:4711")], ["2001:db8::1", 4711], "http", HOST),
    ("default", [(XFF, "2001:db8::1")], ["2001:db8::1", 0], "http", HOST),
    ("default", [(XFF, "::ffff:1.2.3.4")], ["1.2.3.4", 0], "http", HOST),
    ("default", [(XFP, "https")], PEER, "https", HOST),
    ("default", [(XFP, "HTTPS")], PEER, "https", HOST),
    ("default", [(XFP, "gopher")], PEER, "http", HOST),
    ("default", [(XFF, "1.2.3.4"), (XFP, "https")], ["1.2.3.4", 0], "https", HOST),
    # spoofing: a client's own entry sits left of what our proxy appended
    ("default", [(XFF, "6.6.6.6, 1.2.3.4")], ["1.2.3.4", 0], "http", HOST),
    ("default", [(XFF, "1.2.3.4, 127.0.0.1")], ["1.2.3.4", 0], "http", HOST),
    ("default", [(XFF, "127.0.0.1, ::1")], ["127.0.0.1", 0], "http", HOST),
    ("default", [(XFF, "6.6.6.6"), (XFF, "1.2.3.4")], ["1.2.3.4", 0], "http", HOST),
    # garbage is ignored, never a 500
    ("default", [(XFF, "<script>")], PEER, "http", HOST),
    ("default", [(XFF, "1.2.3.4, ")], PEER, "http", HOST),
    ("default", [(XFF, "1.2.3.4:99999")], PEER, "http", HOST),
    ("default", [(XFF, "[::1")], PEER, "http", HOST),
    ("default", [(XFH, "example.com")], PEER, "http", HOST),
    # RFC 7239
    ("default", [(FWD, "for=192.0.2.60;proto=https")], ["192.0.2.60", 0], "https", HOST),
    (
        "default",
        [(FWD, 'for="[2001:db8:cafe::17]:4711"')],
        ["2001:db8:cafe::17", 4711],
        "http",
        HOST,
    ),
    (
        "default",
        [(FWD, 'For="192.0.2.43:47011";Proto=HTTPS')],
        ["192.0.2.43", 47011],
        "https",
        HOST,
    ),
    ("default", [(FWD, "for=_hidden")], ["_hidden", 0], "http", HOST),
    ("default", [(FWD, 'for="_gazonk:_port"')], ["_gazonk", 0], "http", HOST),
    ("default", [(FWD, "for=unknown;proto=https")], ["unknown", 0], "https", HOST),
    (
        "default",
        [(FWD, "for=6.6.6.6, for=1.2.3.4, for=127.0.0.1;proto=https")],
        ["1.2.3.4", 0],
        "https",
        HOST,
    ),
    ("default", [(FWD, 'for=1.2.3.4;host="example.org"')], ["1.2.3.4", 0], "http", HOST),
    ("default", [(FWD, "for=1.2.3.4;for=5.6.7.8")], PEER, "http", HOST),
    ("default", [(FWD, 'for="1.2.3.4')], PEER, "http", HOST),
    ("default", [(FWD, "for=evil.example")], PEER, "http", HOST),
    ("default", [(FWD, "for=1.2.3.4;proto=gopher")], ["1.2.3.4", 0], "http", HOST),
    # both families: X-Forwarded-* wins, Forwarded is ignored
    ("default", [(FWD, "for=6.6.6.6;proto=https"), (XFF, "1.2.3.4")], ["1.2.3.4", 0], "http", HOST),
    ("default", [(FWD, "for=6.6.6.6"), (XFP, "https")], PEER, "https", HOST),
    # --- networks, a literal, and --forwarded-host
    ("networks", [(XFF, "1.2.3.4, 10.0.0.1, 10.2.3.4")], ["1.2.3.4", 0], "http", HOST),
    ("networks", [(XFF, "1.2.3.4, 2001:db8::5")], ["1.2.3.4", 0], "http", HOST),
    ("networks", [(XFF, "1.2.3.4, proxy-name")], ["1.2.3.4", 0], "http", HOST),
    ("networks", [(XFF, "10.0.0.1, 10.0.0.2")], ["10.0.0.1", 0], "http", HOST),
    (
        "networks",
        [(XFF, "1.2.3.4, 10.0.0.5"), (XFP, "https, http"), (XFH, "example.com, internal")],
        ["1.2.3.4", 0],
        "https",
        "example.com",
    ),
    (
        "networks",
        [(XFF, "1.2.3.4, 11.0.0.5"), (XFP, "https, http"), (XFH, "example.com, lb")],
        ["11.0.0.5", 0],
        "http",
        "lb",
    ),
    ("networks", [(XFH, "example.com:8443")], PEER, "http", "example.com:8443"),
    ("networks", [(XFH, "evil.com/path")], PEER, "http", HOST),
    (
        "networks",
        [(FWD, 'for=1.2.3.4;host="example.org";proto=https, for=10.0.0.9')],
        ["1.2.3.4", 0],
        "https",
        "example.org",
    ),
    # --- 127.0.0.1 untrusted: forged headers change nothing
    ("untrusted", [(XFF, "1.2.3.4")], PEER, "http", HOST),
    ("untrusted", [(XFP, "https"), (XFF, "10.0.0.1")], PEER, "http", HOST),
    ("untrusted", [(FWD, "for=1.2.3.4;proto=https")], PEER, "http", HOST),
    # --- "*" trusts every hop: the leftmost, as uvicorn
    ("star", [(XFF, "6.6.6.6, 1.2.3.4")], ["6.6.6.6", 0], "http", HOST),
    # --- --no-proxy-headers
    ("off", [(XFF, "1.2.3.4"), (XFP, "https"), (FWD, "for=1.2.3.4")], PEER, "http", HOST),
    # --- an IPv6 listener: ::1 is in the default list, not in "127.0.0.1"
    ("v6", [(XFF, "1.2.3.4"), (XFP, "https")], ["1.2.3.4", 0], "https", HOST),
    ("v6-untrusted", [(XFF, "1.2.3.4"), (XFP, "https")], PEER, "http", HOST),
    # --- Unix sockets: trusted by "unix:" or the socket's path; no client otherwise
    ("uds", [(XFF, "1.2.3.4"), (XFP, "https")], None, "http", HOST),
    ("uds-unix", [(XFF, "1.2.3.4"), (XFP, "https")], ["1.2.3.4", 0], "https", HOST),
    ("uds-path", [(FWD, "for=1.2.3.4;proto=https")], ["1.2.3.4", 0], "https", HOST),
]


@pytest.mark.parametrize(
    "name, headers, client, scheme, host",
    TABLE,
    ids=[f"{i}-{row[0]}" for i, row in enumerate(TABLE)],
)
def test_resolution(servers, name, headers, client, scheme, host):
    server = servers[name]
    target = getattr(server, "path", None) or server
    echo, own = get(target, headers)
    if client == PEER:
        client = [own[0], own[1]]
    assert echo["client"] == client
    assert echo["scheme"] == scheme
    assert echo["host"] == host


def test_http2_scope_is_resolved(servers):
    with httpx.Client(http1=False, http2=True, timeout=5) as c:
        r = c.get(
            servers["networks"].url,
            headers={XFF: "1.2.3.4, 10.0.0.2", XFP: "https", XFH: "example.com"},
        )
    echo = r.json()
    assert (echo["http_version"], echo["client"]) == ("2", ["1.2.3.4", 0])
    assert (echo["scheme"], echo["host"]) == ("https", "example.com")


def test_websocket_scope_is_resolved(servers):
    url = servers["default"].url.replace("http://", "ws://")
    headers = {XFF: "1.2.3.4:99", XFP: "https"}
    with connect(url, additional_headers=headers, open_timeout=5) as ws:
        echo = json.loads(ws.recv(timeout=5))
    assert (echo["client"], echo["scheme"]) == (["1.2.3.4", 99], "wss")
    servers["default"].wait_for_log(r'1\.2\.3\.4:99 - "WebSocket /" \[accepted\]', stdout=True)
    with connect(url, additional_headers={FWD: "for=unknown;proto=http"}) as ws:
        echo = json.loads(ws.recv(timeout=5))
    assert (echo["client"], echo["scheme"]) == (["unknown", 0], "ws")
    untrusted = servers["untrusted"].url.replace("http://", "ws://")
    with connect(untrusted, additional_headers=headers) as ws:
        echo = json.loads(ws.recv(timeout=5))
    assert echo["client"][0] == "127.0.0.1" and echo["scheme"] == "ws"


def access_lines(server: Server, count: int, timeout: float = 5.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        lines = [line for line in server.stdout_text().splitlines() if '"GET ' in line]
        if len(lines) >= count or time.monotonic() > deadline:
            return lines


def test_access_log_shows_the_resolved_client(servers):
    server = servers["networks"]
    before = len(access_lines(server, 0, timeout=0))
    get(server, [(XFF, "203.0.113.7:4242, 10.0.0.1")])
    get(server, [(FWD, 'for="[2001:db8::7]:80"')])
    echo, own = get(server, [(XFF, "garbage here")])
    with httpx.Client(http1=False, http2=True, timeout=5) as c:
        c.get(server.url + "/h2", headers={XFF: "198.51.100.9"})
    lines = access_lines(server, before + 4)[before:]
    assert lines[0].startswith('INFO:     203.0.113.7:4242 - "GET / HTTP/1.1" 200'), lines
    assert lines[1].startswith('INFO:     [2001:db8::7]:80 - "GET / HTTP/1.1" 200'), lines
    assert lines[2].startswith(f'INFO:     127.0.0.1:{own[1]} - "GET / HTTP/1.1" 200'), lines
    assert lines[3].startswith('INFO:     198.51.100.9:0 - "GET /h2 HTTP/2" 200'), lines
    assert "Internal Server Error" not in server.stderr_text()


@pytest.mark.parametrize(
    "args, env, option",
    [
        (["--forwarded-allow-ips", "10.0.0.0/33"], {}, "--forwarded-allow-ips"),
        (["--forwarded-allow-ips", "10.0.0.1/8"], {}, "--forwarded-allow-ips"),
        (["--forwarded-allow-ips", "127.0.0.1,300.1.2.3"], {}, "--forwarded-allow-ips"),
        (["--proxy-allow-from", "fd00::/129"], {}, "--proxy-allow-from"),
        (["--proxy-allow-from", "10.0.0/8"], {}, "--proxy-allow-from"),
        ([], {"FORWARDED_ALLOW_IPS": "abc/8"}, "--forwarded-allow-ips"),
        (["--proxy-protocol", "v3"], {}, "--proxy-protocol"),
    ],
)
def test_malformed_lists_stop_before_any_worker(args, env, option, monkeypatch):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    done = run_to_exit(APP, *args)
    assert done.returncode == 2, done
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and option in errors[0], done.stderr
    assert "Started" not in done.stderr and "ready" not in done.stderr


def test_env_trust_list_is_read(monkeypatch):
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "10.0.0.1")
    with Server(APP) as s:
        echo, own = get(s, [(XFF, "1.2.3.4")])
    assert echo["client"] == ["127.0.0.1", own[1]]


# ------------------------------------------------------------------ PROXY protocol
V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def v2_header(command=1, family=0x11, payload=b"") -> bytes:
    return V2_SIG + bytes([0x20 | command, family]) + struct.pack("!H", len(payload)) + payload


def v2_inet(src="192.0.2.1", dst="198.51.100.2", sport=56324, dport=443, tlvs=b"") -> bytes:
    addrs = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!HH", sport, dport)
    return v2_header(1, 0x11, addrs + tlvs)


def v2_inet6(src="2001:db8::1", dst="2001:db8::2", sport=4711, dport=443) -> bytes:
    pton = socket.inet_pton
    addrs = (
        pton(socket.AF_INET6, src) + pton(socket.AF_INET6, dst) + struct.pack("!HH", sport, dport)
    )
    return v2_header(1, 0x21, addrs)


@pytest.fixture(scope="module")
def pp(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pp")
    specs = {
        "v1": [
            "--proxy-protocol",
            "v1",
            "--timeout-request-header",
            "1",
            "--timeout-keep-alive",
            "1",
        ],
        "v2": ["--proxy-protocol", "v2"],
        "auto": ["--proxy-protocol"],  # alone: auto, as gunicorn
        "stranger": ["--proxy-protocol", "auto", "--proxy-allow-from", "10.0.0.1"],
        "forwarded": ["--proxy-protocol", "v1", "--forwarded-allow-ips", "10.0.0.0/8"],
        "uds": [
            "--uds",
            str(tmp / "pp.sock"),
            "--proxy-protocol",
            "v2",
            "--proxy-allow-from",
            "unix:",
        ],
    }
    running = {name: Server(APP, *args) for name, args in specs.items()}
    try:
        for server in running.values():
            server.start()
        running["uds"].path = str(tmp / "pp.sock")
        yield running
    finally:
        for server in running.values():
            server.stop()


def refused(server: Server, data: bytes, wait: float = 5.0) -> bool:
    """Whether the server closed the connection without answering a byte (a reset
    when it closed with our bytes unread)."""
    with server.connect() as sock:
        return raw_exchange(sock, data, wait=wait) in (b"<EOF>", b"<RST>")


def proxy_warnings(server: Server) -> list[str]:
    return [line for line in server.stderr_text().splitlines() if "PROXY protocol" in line]


def wait_warnings(server: Server, count: int) -> list[str]:
    deadline = time.monotonic() + 5
    while len(proxy_warnings(server)) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    return proxy_warnings(server)


def test_v1_valid_addresses(pp):
    echo, _ = get(pp["v1"], prefix=b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n")
    assert echo["client"] == ["192.0.2.1", 56324]
    echo, _ = get(pp["v1"], prefix=b"PROXY TCP6 2001:db8::1 2001:db8::2 4711 443\r\n")
    assert echo["client"] == ["2001:db8::1", 4711]
    echo, own = get(pp["v1"], prefix=b"PROXY UNKNOWN\r\n")
    assert echo["client"] == ["127.0.0.1", own[1]]


def test_v1_header_and_requests_in_one_segment_and_keep_alive(pp):
    header = b"PROXY TCP4 192.0.2.9 198.51.100.2 1000 443\r\n"
    request = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
    with pp["v1"].connect() as sock:
        sock.sendall(header + request + request[:10])
        time.sleep(0.1)
        sock.sendall(request[10:])
        data = b""
        deadline = time.monotonic() + 5
        while data.count(b"192.0.2.9") < 2 and time.monotonic() < deadline:
            data += sock.recv(65536)
    assert data.count(b'"client": ["192.0.2.9", 1000]') == 2, data


def test_v1_header_sent_byte_by_byte(pp):
    header = b"PROXY TCP4 192.0.2.3 198.51.100.2 5 443\r\n"
    with pp["v1"].connect() as sock:
        for i in range(len(header)):
            sock.sendall(header[i : i + 1])
            time.sleep(0.005)
        raw = raw_exchange(sock, b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", 5)
    assert parse_response(raw.removesuffix(b"<EOF>"))["client"] == ["192.0.2.3", 5]


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", "no PROXY header"),
        (b"PROXY GARBAGE\r\n", "fields"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\n", "port"),
        (b"PROXY TCP4 " + b"1" * 200 + b"\r\n", "longer than 107"),
        (v2_inet(), "v2 header, but --proxy-protocol v1"),
    ],
    ids=["none", "garbage", "bad-port", "oversized", "wrong-version"],
)
def test_v1_refusals_close_and_log_once(pp, data, reason):
    server = pp["v1"]
    before = len(proxy_warnings(server))
    assert refused(server, data)
    lines = wait_warnings(server, before + 1)[before:]
    assert len(lines) == 1 and reason in lines[0] and "127.0.0.1" in lines[0], lines
    assert lines[0].startswith("WARNING:")
    time.sleep(0.2)
    assert len(proxy_warnings(server)) == before + 1


def test_truncated_header_times_out(pp):
    server = pp["v1"]  # --timeout-request-header 1
    before = len(proxy_warnings(server))
    start = time.monotonic()
    assert refused(server, b"PROXY TCP4 192.0.2.1 198.5", wait=5)
    assert time.monotonic() - start < 4
    # Closed quietly, as a client that never finishes its HTTP head.
    assert len(proxy_warnings(server)) == before


def test_silent_connection_closes_after_keep_alive(pp):
    server = pp["v1"]  # --timeout-keep-alive 1
    start = time.monotonic()
    with server.connect() as sock:
        sock.settimeout(5)
        assert sock.recv(100) == b""
    assert time.monotonic() - start < 4


def test_v2_valid_forms(pp):
    authority = b"\x02\x00\x0bexample.com" + b"\x04\x00\x02\x00\x00"  # skipped TLVs
    echo, _ = get(pp["v2"], prefix=v2_inet(tlvs=authority))
    assert echo["client"] == ["192.0.2.1", 56324]
    echo, _ = get(pp["v2"], prefix=v2_inet6())
    assert echo["client"] == ["2001:db8::1", 4711]
    for local in (
        v2_header(0, 0x00),
        v2_header(0, 0x11, bytes(12)),
        v2_header(1, 0x31, bytes(216)),
    ):
        echo, own = get(pp["v2"], prefix=local)
        assert echo["client"] == ["127.0.0.1", own[1]]


@pytest.mark.parametrize(
    "data, reason",
    [
        (v2_header(1, 0x12, bytes(12)), "non-stream"),
        (v2_header(1, 0x11, bytes(8)), "shorter than its addresses"),
        (V2_SIG + b"\x21\x11\xff\xff", "at most 4096"),
        (V2_SIG + b"\x31\x11\x00\x0c" + bytes(12), "version 3"),
        (v2_inet(tlvs=b"\x01\x00\x09ab"), "TLV"),
        (b"PROXY TCP4 192.0.2.1 198.51.100.2 1 2\r\n", "v1 header, but --proxy-protocol v2"),
    ],
    ids=["dgram", "short", "oversized", "version", "bad-tlv", "wrong-version"],
)
def test_v2_refusals_close_and_log_once(pp, data, reason):
    server = pp["v2"]
    before = len(proxy_warnings(server))
    assert refused(server, data)
    lines = wait_warnings(server, before + 1)[before:]
    assert len(lines) == 1 and reason in lines[0], lines


def test_truncated_v2_header_closed_by_the_peer(pp):
    server = pp["v2"]
    with server.connect() as sock:
        sock.sendall(v2_inet()[:20])
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(5)
        assert sock.recv(100) == b""  # closed, nothing answered
    echo, _ = get(server, prefix=v2_inet(src="192.0.2.77"))  # still serving
    assert echo["client"][0] == "192.0.2.77"


def test_auto_takes_either_version_or_none(pp):
    echo, _ = get(pp["auto"], prefix=b"PROXY TCP4 192.0.2.5 198.51.100.2 1 2\r\n")
    assert echo["client"] == ["192.0.2.5", 1]
    echo, _ = get(pp["auto"], prefix=v2_inet(src="192.0.2.6", sport=2))
    assert echo["client"] == ["192.0.2.6", 2]
    echo, own = get(pp["auto"])
    assert echo["client"] == ["127.0.0.1", own[1]]


def test_header_from_a_peer_not_allowed_is_refused(pp):
    server = pp["stranger"]  # --proxy-allow-from 10.0.0.1
    for data in (b"PROXY TCP4 192.0.2.1 198.51.100.2 1 2\r\n", v2_inet()):
        before = len(proxy_warnings(server))
        assert refused(server, data)
        lines = wait_warnings(server, before + 1)[before:]
        assert len(lines) == 1 and "not in --proxy-allow-from" in lines[0], lines
    # Its plain requests are served as its own.
    echo, own = get(server)
    assert echo["client"] == ["127.0.0.1", own[1]]


def test_forwarded_headers_are_checked_against_the_proxy_address(pp):
    server = pp["forwarded"]  # --forwarded-allow-ips 10.0.0.0/8
    trusted = b"PROXY TCP4 10.0.0.5 10.0.0.1 1 2\r\n"
    echo, _ = get(server, [(XFF, "1.2.3.4"), (XFP, "https")], prefix=trusted)
    assert (echo["client"], echo["scheme"]) == (["1.2.3.4", 0], "https")
    stranger = b"PROXY TCP4 192.0.2.1 10.0.0.1 7 2\r\n"
    echo, _ = get(server, [(XFF, "1.2.3.4"), (XFP, "https")], prefix=stranger)
    assert (echo["client"], echo["scheme"]) == (["192.0.2.1", 7], "http")


def test_unix_socket_behind_proxy_protocol(pp):
    echo, _ = get(pp["uds"].path, prefix=v2_inet(src="192.0.2.8", sport=8))
    assert echo["client"] == ["192.0.2.8", 8]


def test_http2_prior_knowledge_behind_proxy_protocol(pp):
    with pp["auto"].connect() as sock:
        sock.sendall(b"PROXY TCP6 2001:db8::9 2001:db8::1 9999 80\r\n")
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        conn.initiate_connection()
        stream = conn.get_next_available_stream_id()
        conn.send_headers(
            stream,
            [(":method", "GET"), (":scheme", "http"), (":authority", "a"), (":path", "/")],
            end_stream=True,
        )
        sock.sendall(conn.data_to_send())
        body, ended = b"", False
        deadline = time.monotonic() + 5
        while not ended and time.monotonic() < deadline:
            for event in conn.receive_data(sock.recv(65536)):
                if isinstance(event, h2.events.DataReceived):
                    body += event.data
                elif isinstance(event, h2.events.StreamEnded):
                    ended = True
            sock.sendall(conn.data_to_send())
    echo = json.loads(body)
    assert (echo["http_version"], echo["client"]) == ("2", ["2001:db8::9", 9999])


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.private_key_and_cert_chain_pem.write_to_path(str(d / "server.pem"))
    ca.cert_pem.write_to_path(str(d / "ca.pem"))
    return d


def test_tls_behind_proxy_protocol(pki):
    pem = str(pki / "server.pem")
    args = ["--ssl-certfile", pem, "--ssl-keyfile", pem, "--proxy-protocol", "v2"]
    with Server(APP, *args) as server:
        ctx = ssl.create_default_context(cafile=str(pki / "ca.pem"))
        for alpn, version in ((["http/1.1"], "1.1"), (["h2"], "2")):
            ctx.set_alpn_protocols(alpn)
            with server.connect() as raw:
                raw.sendall(v2_inet(src="192.0.2.10", sport=10))
                with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                    if version == "1.1":
                        tls.sendall(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
                        data = b""
                        while chunk := tls.recv(65536):
                            data += chunk
                        echo = parse_response(data)
                    else:
                        echo = h2_get(tls)
            assert echo["client"] == ["192.0.2.10", 10]
            assert (echo["scheme"], echo["http_version"]) == ("https", version)
        # A TLS client without the header is closed, and said so once.
        with server.connect() as raw:
            with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
                ctx.wrap_socket(raw, server_hostname="127.0.0.1")
        lines = wait_warnings(server, 1)
        assert len(lines) == 1 and "no PROXY header" in lines[0], lines


def h2_get(sock) -> dict:
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    stream = conn.get_next_available_stream_id()
    headers = [(":method", "GET"), (":scheme", "https"), (":authority", "a"), (":path", "/")]
    conn.send_headers(stream, headers, end_stream=True)
    sock.sendall(conn.data_to_send())
    body, ended = b"", False
    while not ended:
        for event in conn.receive_data(sock.recv(65536)):
            if isinstance(event, h2.events.DataReceived):
                body += event.data
            elif isinstance(event, h2.events.StreamEnded):
                ended = True
        sock.sendall(conn.data_to_send())
    return json.loads(body)


def test_without_proxy_protocol_a_header_is_a_bad_request(servers):
    with servers["default"].connect() as sock:
        raw = raw_exchange(sock, b"PROXY TCP4 192.0.2.1 198.51.100.2 1 2\r\n\r\n", wait=5)
    assert re.match(rb"HTTP/1.1 400", raw), raw


# ------------------------------------------------------------------ Python API
def test_keywords_take_lists_as_uvicorn_does():
    from ferrocorn import _options

    argv = _options.to_argv(
        "main:app",
        {
            "proxy_headers": False,
            "forwarded_allow_ips": ["10.0.0.1", "fd00::/8"],
            "forwarded_host": True,
            "proxy_protocol": "V2",
            "proxy_allow_from": "10.0.0.0/8",
        },
    )
    assert argv == [
        "main:app",
        "--no-proxy-headers",
        "--forwarded-allow-ips",
        "10.0.0.1,fd00::/8",
        "--forwarded-host",
        "--proxy-protocol",
        "v2",
        "--proxy-allow-from",
        "10.0.0.0/8",
    ]
    with pytest.raises(TypeError, match="forwarded_allow_ips"):
        _options.to_argv("main:app", {"forwarded_allow_ips": [10]})


def test_testing_serve_with_a_trust_list():
    from ferrocorn.testing import serve

    from tests.server import APPS_DIR

    with serve(APP, app_dir=str(APPS_DIR), forwarded_allow_ips=["10.0.0.1"]) as url:
        untrusted = httpx.get(url, headers={XFF: "1.2.3.4"}).json()
    assert untrusted["client"][0] == "127.0.0.1"
    with serve(APP, app_dir=str(APPS_DIR), forwarded_allow_ips="127.0.0.1") as url:
        trusted = httpx.get(url, headers={XFF: "1.2.3.4"}).json()
    assert trusted["client"] == ["1.2.3.4", 0]
