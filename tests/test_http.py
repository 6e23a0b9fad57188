"""ASGI http behaviour against a real server: scope, bodies both ways, wire details."""

import json
import os
import socket
import time

import httpx
import pytest

from tests.server import Server, raw_exchange


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    record = tmp_path_factory.mktemp("rec") / "disconnect.txt"
    with Server(
        "basic:app", "--root-path", "/api", env={"FERROCORN_TEST_RECORD": str(record)}
    ) as s:
        s.record = record
        yield s


def test_scope(server):
    r = httpx.get(f"{server.url}/caf%C3%A9/x?a=1&b=%20", headers={"X-Custom": "Yes"})
    assert r.status_code == 200
    scope = r.json()
    assert scope["type"] == "http"
    # uvicorn's: 2.3 keeps Starlette watching for http.disconnect while it streams.
    assert scope["asgi"] == {"version": "3.0", "spec_version": "2.3"}
    assert scope["http_version"] == "1.1"
    assert scope["method"] == "GET"
    assert scope["scheme"] == "http"
    assert scope["root_path"] == "/api"
    assert scope["path"] == "/api/café/x"
    assert scope["raw_path"] == "/api/caf%C3%A9/x"
    assert scope["query_string"] == "a=1&b=%20"
    assert ["x-custom", "Yes"] in scope["headers"]
    assert all(name == name.lower() for name, _ in scope["headers"])
    assert scope["client"][0] == "127.0.0.1"
    assert scope["server"] == ["127.0.0.1", server.port]
    assert scope["state_keys"] == []


def test_headers_keep_client_order(server):
    with server.connect() as sock:
        raw = raw_exchange(
            sock,
            b"GET /scope HTTP/1.1\r\nHost: h\r\nB: 1\r\nA: 2\r\nB: 3\r\nConnection: close\r\n\r\n",
        )
    body = raw.split(b"\r\n\r\n", 1)[1].replace(b"<EOF>", b"")
    names = [name for name, _ in json.loads(body)["headers"]]
    assert names == ["host", "b", "a", "b", "connection"]


def test_http_10(server):
    with server.connect() as sock:
        raw = raw_exchange(sock, b"GET /scope HTTP/1.0\r\n\r\n")
    assert raw.startswith(b"HTTP/1.0 200 OK\r\n")
    assert b'"http_version": "1.0"' in raw
    assert raw.endswith(b"<EOF>")


def test_body_echo_small_and_large(server):
    assert httpx.post(f"{server.url}/echo", content=b"hello").content == b"hello"
    big = os.urandom(1024 * 1024)
    r = httpx.post(f"{server.url}/echo", content=big, timeout=20)
    assert r.content == big
    # A streamed request body reaches the app in pieces, not buffered whole.
    assert int(r.headers["x-pieces"]) > 1


def test_chunked_request_body(server):
    def gen():
        for part in (b"ab", b"cd", b"ef"):
            yield part
            time.sleep(0.05)

    r = httpx.post(f"{server.url}/echo", content=gen())
    assert r.content == b"abcdef"


def test_streaming_response_is_chunked(server):
    with server.connect() as sock:
        raw = raw_exchange(sock, b"GET /stream HTTP/1.1\r\nHost: h\r\n\r\n", wait=1.5)
    head, body = raw.split(b"\r\n\r\n", 1)
    assert b"transfer-encoding: chunked" in head.lower()
    assert body.startswith(b"6\r\npart0;\r\n")
    assert body.endswith(b"0\r\n\r\n")
    r = httpx.get(f"{server.url}/stream")
    assert r.text == "part0;part1;part2;part3;part4;"


def test_large_streamed_response(server):
    r = httpx.get(f"{server.url}/big", timeout=20)
    assert len(r.content) == 16 * 65536


def test_keep_alive_and_pipelining(server):
    with server.connect() as sock:
        raw = raw_exchange(
            sock,
            b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n"
            b"POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello"
            b"GET /count HTTP/1.1\r\nHost: h\r\n\r\n",
        )
    assert raw.count(b"HTTP/1.1 200 OK") == 3
    assert raw.index(b'"path": "/api/a"') < raw.index(b"hello")
    with httpx.Client() as client:
        ports = {client.get(f"{server.url}/scope").json()["client"][1] for _ in range(3)}
    assert len(ports) == 1  # one connection reused


def test_each_response_on_a_connection_has_only_its_own_headers(server):
    # The connection lends one buffer to each response's header fields in turn: no
    # field of an earlier response may show up in a later one.
    with server.connect() as sock:
        raw = raw_exchange(
            sock,
            b"GET /scope HTTP/1.1\r\nHost: h\r\n\r\n"
            b"POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nhi"
            b"GET /scope HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
        )
    heads = [part.split(b"\r\n\r\n", 1)[0] for part in raw.split(b"HTTP/1.1 200 OK\r\n")[1:]]
    names = [sorted(line.split(b":")[0] for line in head.split(b"\r\n")) for head in heads]
    assert names[0] == [b"content-length", b"content-type", b"date", b"server"]
    assert names[1] == [b"content-length", b"date", b"server", b"x-pieces"]
    assert names[2] == [b"connection", b"content-length", b"content-type", b"date", b"server"]


def test_expect_continue_only_when_app_reads(server):
    with server.connect() as sock:
        first = raw_exchange(
            sock,
            b"POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
            wait=0.5,
        )
        assert first == b"HTTP/1.1 100 Continue\r\n\r\n"
        rest = raw_exchange(sock, b"hello", wait=0.5)
        assert rest.startswith(b"HTTP/1.1 200 OK") and rest.endswith(b"hello")
    with server.connect() as sock:
        raw = raw_exchange(
            sock,
            b"POST /noread HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n"
            b"Expect: 100-continue\r\n\r\n",
            wait=0.5,
        )
    assert b"100 Continue" not in raw
    assert raw.startswith(b"HTTP/1.1 200 OK")


def test_head_has_no_body(server):
    with server.connect() as sock:
        raw = raw_exchange(
            sock, b"HEAD /x HTTP/1.1\r\nHost: h\r\n\r\nGET /count HTTP/1.1\r\nHost: h\r\n\r\n"
        )
    first, second = raw.split(b"HTTP/1.1 200 OK")[1:]
    assert first.endswith(b"\r\n\r\n")  # headers only, then the next response
    assert b"content-length:" in first


def test_server_and_date_headers(server):
    r = httpx.get(f"{server.url}/x")
    assert r.headers["server"] == "ferrocorn"
    assert "date" in r.headers


def test_disconnect_and_send_after_it(server):
    with server.connect() as sock:
        sock.sendall(b"GET /disconnect HTTP/1.1\r\nHost: h\r\n\r\n")
        time.sleep(0.3)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not server.record.exists():
        time.sleep(0.05)
    assert server.record.read_text() == "http.request http.disconnect OSError:ClientDisconnected"


def test_uds(tmp_path):
    path = tmp_path / "s.sock"
    with Server("basic:app", "--uds", str(path)) as s:
        s.wait_for_log("running on unix socket")
        transport = httpx.HTTPTransport(uds=str(path))
        with httpx.Client(transport=transport) as client:
            r = client.get("http://localhost/scope")
        assert r.status_code == 200
        assert r.json()["client"] is None


def test_inherited_fd():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    port = listener.getsockname()[1]
    fd = listener.fileno()
    os.set_inheritable(fd, True)
    import subprocess
    import sys

    proc = subprocess.Popen(
        [sys.executable, "-m", "ferrocorn", "basic:app", "--fd", str(fd)],
        cwd=os.path.join(os.path.dirname(__file__), "apps"),
        pass_fds=(fd,),
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        for line in proc.stderr:
            if "ferrocorn ready" in line:
                break
        assert httpx.get(f"http://127.0.0.1:{port}/count").status_code == 200
    finally:
        proc.terminate()
        assert proc.wait(10) == 0
        listener.close()


def test_ipv6_loopback():
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    try:
        probe = socket.socket(socket.AF_INET6)
        probe.bind(("::1", 0))
        probe.close()
    except OSError:
        pytest.skip("::1 not configured")
    with Server("basic:app", "--host", "::1") as s:
        assert s.url.startswith("http://[::1]:")
        assert httpx.get(f"{s.url}/scope").json()["client"][0] == "::1"
