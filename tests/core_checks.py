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


# Response shapes and the response extensions (tests/apps/send_app.py), checked with
# httpx over each protocol; test_send.py adds what needs a raw socket or h2 frames.


def check_list_and_iterable_headers(client, server):
    r = client.get("/send/list-headers")
    assert r.status_code == 200
    assert r.headers["x-shape"] == "list"
    assert r.content == b"list headers"
    r = client.get("/send/iter-headers")
    assert r.status_code == 200
    assert r.headers["x-shape"] == "tuple"
    assert r.headers.get_list("x-gen") == ["1", "2"]
    assert r.content == b"iter headers"


def check_bytes_like_bodies(client, server):
    from tests.apps.send_app import BIG

    r = client.get("/send/bytes-like")
    assert r.status_code == 200
    assert r.content == b"bytearray|memoryview|" + BIG[1:] + b"|end"
    r = client.get("/send/starlette/memoryview")
    assert r.status_code == 200
    assert r.content == b"starlette memoryview body"
    assert r.headers["content-length"] == str(len(r.content))


def check_invalid_start_is_500(client, server):
    for name in ("bad-start-header", "bad-start-length", "bad-start-status"):
        r = client.get(f"/send/{name}")
        assert r.status_code == 500, name
        assert r.content == b"Internal Server Error"


def check_app_chunked_with_length(client, server):
    r = client.get("/send/te-and-length")
    assert r.status_code == 200
    assert r.content == b"hello world"
    assert not ("content-length" in r.headers and "transfer-encoding" in r.headers)
    assert client.get("/send/te-only").content == b"one body"


def check_extensions_advertised(client, server):
    names = client.get("/send/extensions").text.split(",")
    for ext in ("http.response.pathsend", "http.response.early_hint", "http.response.trailers"):
        assert ext in names


def check_starlette_file_response_uses_pathsend(client, server):
    import tempfile

    data = os.urandom(1024 * 1024 + 17)
    with tempfile.NamedTemporaryFile(suffix=".bin") as f:
        f.write(data)
        f.flush()
        before = client.get("/record").json().get("sent", {}).get("http.response.pathsend", 0)
        r = client.get("/send/starlette/file", params={"file": f.name})
        assert r.status_code == 200
        assert r.headers["content-length"] == str(len(data))
        assert r.content == data
        sent = client.get("/record").json()["sent"]
        assert sent["http.response.pathsend"] == before + 1
        head = client.head("/send/starlette/file", params={"file": f.name})
        assert head.status_code == 200
        assert head.headers["content-length"] == str(len(data))
        assert head.content == b""
        # A length the app sets is what is sent, even when the file is longer.
        r = client.get("/send/pathsend", params={"file": f.name, "cl": "1000"})
        assert r.content == data[:1000]
        empty = tempfile.NamedTemporaryFile(suffix=".bin")
        with empty:
            r = client.get("/send/pathsend", params={"file": empty.name})
            assert r.status_code == 200
            assert r.content == b""
    assert client.get("/").content == HELLO  # the connection is still in step


def check_pathsend_missing_file_is_500(client, server):
    r = client.get("/send/pathsend", params={"file": "/nonexistent/ferrocorn-test"})
    assert r.status_code == 500
    server.wait_for_log(
        r"http.response.pathsend failed: cannot open \"/nonexistent/ferrocorn-test\""
    )
    r = client.get("/send/pathsend", params={"file": "/"})
    assert r.status_code == 500


SEND_CHECKS = [
    check_list_and_iterable_headers,
    check_bytes_like_bodies,
    check_invalid_start_is_500,
    check_app_chunked_with_length,
    check_extensions_advertised,
    check_starlette_file_response_uses_pathsend,
    check_pathsend_missing_file_is_500,
]
