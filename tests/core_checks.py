"""HTTP checks that hold whatever carries the requests (HTTP/1.1 over TLS, HTTP/2):
test_tls.py and test_http2.py run them with their own httpx client, next to the checks
that differ by protocol (scope fields, how a streamed response is framed).

Each check takes (client, server); the server runs tests/apps/protocols.py."""

import os

HELLO = b"Hello, world!"


def check_post_echo_1mb(client, server):
    assert client.post("/echo", content=b"hello").content == b"hello"
    body = os.urandom(1024 * 1024)
    assert client.post("/echo", content=body).content == body


def check_streamed_request_body(client, server):
    def parts():
        yield from (b"ab", b"cd", b"ef")

    assert client.post("/echo", content=parts()).content == b"abcdef"


def check_keep_alive_reuses_one_connection(client, server):
    ports = {client.get("/scope").json()["client"][1] for _ in range(4)}
    assert len(ports) == 1


def check_head(client, server):
    r = client.head("/")
    assert r.status_code == 200
    assert r.content == b""
    assert client.get("/").content == HELLO  # the connection is still in step


def check_not_found(client, server):
    assert client.get("/missing").status_code == 404


SHARED_CHECKS = [
    check_post_echo_1mb,
    check_streamed_request_body,
    check_keep_alive_reuses_one_connection,
    check_head,
    check_not_found,
]
