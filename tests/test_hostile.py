"""Hostile and malformed requests, each over a raw socket to a real server whose app
reads the whole body. For every case: the exact status, exactly one response, the
connection closed, nothing after the bad request ever served, and the worker still
serving others. (RFC 9110/9112; docs/security.md lists the rules.)"""

import httpx
import pytest

from tests.server import Server, raw_exchange

CRLF = "\r\n"


def head(*fields: str, line: str = "POST /echo HTTP/1.1", host: bool = True) -> bytes:
    lines = [line, *(["Host: h"] if host else []), *fields, "", ""]
    return CRLF.join(lines).encode("latin-1")


def chunked(body: bytes, *fields: str) -> bytes:
    return head("Transfer-Encoding: chunked", *fields) + body


CASES = {
    # Content-Length and Transfer-Encoding framing
    "cl_and_te": (head("Content-Length: 3", "Transfer-Encoding: chunked") + b"0\r\n\r\n", 400),
    "te_and_cl": (head("Transfer-Encoding: chunked", "Content-Length: 3") + b"0\r\n\r\n", 400),
    "cl_zero_and_te": (head("Content-Length: 0", "Transfer-Encoding: chunked"), 400),
    "cl_repeated_same": (head("Content-Length: 3", "Content-Length: 3") + b"abc", 400),
    "cl_repeated_different": (head("Content-Length: 3", "Content-Length: 4") + b"abc", 400),
    "cl_list": (head("Content-Length: 3, 3") + b"abc", 400),
    "cl_plus": (head("Content-Length: +3") + b"abc", 400),
    "cl_minus": (head("Content-Length: -3"), 400),
    "cl_hex": (head("Content-Length: 0x3") + b"abc", 400),
    "cl_overflow": (head("Content-Length: 99999999999999999999999"), 400),
    "cl_space_inside": (head("Content-Length: 1 0"), 400),
    "cl_empty": (head("Content-Length: "), 400),
    "cl_letters": (head("Content-Length: three"), 400),
    "te_repeated": (head("Transfer-Encoding: chunked", "Transfer-Encoding: chunked"), 400),
    "te_chunked_twice": (head("Transfer-Encoding: chunked, chunked"), 400),
    "te_not_last": (head("Transfer-Encoding: chunked, gzip"), 400),
    "te_gzip_only": (head("Transfer-Encoding: gzip"), 400),
    "te_identity": (head("Transfer-Encoding: identity"), 400),
    "te_unknown_then_chunked": (head("Transfer-Encoding: gzip, chunked"), 501),
    "te_xchunked": (head("Transfer-Encoding: xchunked"), 400),
    "te_on_http10": (head("Transfer-Encoding: chunked", line="POST /echo HTTP/1.0"), 400),
    "te_space_before_colon": (head("Transfer-Encoding : chunked") + b"0\r\n\r\n", 400),
    "te_control_char": (head("Transfer-Encoding: chunked\x01"), 400),
    "te_vertical_tab": (head("Transfer-Encoding:\x0bchunked"), 400),
    # chunk sizes and chunk framing
    "chunk_size_minus": (chunked(b"-1\r\na\r\n0\r\n\r\n"), 400),
    "chunk_size_plus": (chunked(b"+1\r\na\r\n0\r\n\r\n"), 400),
    "chunk_size_0x": (chunked(b"0x1\r\na\r\n0\r\n\r\n"), 400),
    "chunk_size_overflow": (chunked(b"1" * 17 + b"\r\na\r\n0\r\n\r\n"), 400),
    "chunk_size_leading_space": (chunked(b" 1\r\na\r\n0\r\n\r\n"), 400),
    "chunk_size_letters": (chunked(b"zz\r\na\r\n0\r\n\r\n"), 400),
    "chunk_size_empty": (chunked(b"\r\na\r\n0\r\n\r\n"), 400),
    "chunk_data_too_long": (chunked(b"3\r\nabcd\r\n0\r\n\r\n"), 400),
    "chunk_data_too_short": (chunked(b"5\r\nabc\r\n0\r\n\r\n"), 400),
    "chunk_missing_crlf": (chunked(b"3\r\nabc0\r\n\r\n"), 400),
    "chunk_ext_bare_cr": (chunked(b"3;a\rb\r\nabc\r\n0\r\n\r\n"), 400),
    "chunk_ext_bare_lf": (chunked(b"3;a\nb\r\nabc\r\n0\r\n\r\n"), 400),
    "chunk_ext_too_long": (chunked(b"3;" + b"x" * 5000 + b"\r\nabc\r\n0\r\n\r\n"), 400),
    "chunk_line_bare_lf": (chunked(b"3\nabc\n0\n\n"), 400),
    "chunk_data_bare_lf": (chunked(b"3\r\nabc\n0\r\n\r\n"), 400),
    "last_chunk_bare_lf": (chunked(b"0\n\n"), 400),
    "trailer_without_colon": (chunked(b"0\r\nnot a field\r\n\r\n"), 400),
    "trailer_bad_name": (chunked(b"0\r\nBad Name: v\r\n\r\n"), 400),
    "late_bad_chunk": (chunked(b"3\r\nabc\r\nZZ\r\nabc\r\n0\r\n\r\n"), 400),
    # field syntax
    "cr_in_value": (head("X-A: a\rb"), 400),
    "lf_obs_fold": (head("X-A: a", " folded"), 400),
    "nul_in_value": (head("X-A: a\x00b"), 400),
    "empty_name": (head(": value"), 400),
    "space_in_name": (head("X A: v"), 400),
    "paren_in_name": (head("X(A): v"), 400),
    "del_in_name": (head("X\x7fA: v"), 400),
    "no_colon": (head("NoColonHere"), 400),
    "missing_host": (head(host=False), 400),
    "repeated_host": (head("Host: other"), 400),
    # request line
    "bad_method": (head(line="G(T / HTTP/1.1"), 400),
    "space_in_target": (head(line="GET /a b HTTP/1.1"), 400),
    "tab_in_target": (head(line="GET /a\tb HTTP/1.1"), 400),
    "control_in_target": (head(line="GET /a\x01 HTTP/1.1"), 400),
    "http_2_0": (head(line="GET / HTTP/2.0"), 505),
    "http_3": (head(line="GET / HTTP/3.0"), 505),
    "garbage_version": (head(line="GET / FOO/1.1"), 400),
    "no_version": (b"GET /\r\n\r\n", 400),
    # limits (server below: line 300, 10 fields, 300 bytes a field, 100-byte bodies)
    "line_too_long": (head(line="GET /" + "a" * 400 + " HTTP/1.1"), 414),
    "too_many_fields": (head(*(f"X-{i}: v" for i in range(12))), 431),
    "field_too_large": (head("X-Big: " + "v" * 400), 431),
    "body_over_limit": (head("Content-Length: 101") + b"x" * 101, 413),
    "chunked_over_limit": (chunked(b"65\r\n" + b"x" * 101 + b"\r\n0\r\n\r\n"), 413),
    "unknown_expectation": (head("Expect: teapot", "Content-Length: 1") + b"x", 417),
}

SMUGGLED = b"GET /count HTTP/1.1\r\nHost: h\r\n\r\n"


# The same table against an ASGI app and a WSGI app: the connection's checks run before
# either interface sees the request, and must hold for both.
APPS = {
    "asgi": ("basic:app",),
    "wsgi": ("wsgi_apps:hostile", "--interface", "wsgi"),
}


@pytest.fixture(scope="module", params=sorted(APPS))
def server(request):
    args = [
        "--limit-request-line", "300",
        "--limit-request-fields", "10",
        "--limit-request-field-size", "300",
        "--limit-request-body", "100",
    ]  # fmt: skip
    with Server(*APPS[request.param], *args) as s:
        yield s


def served(server) -> int:
    return int(httpx.get(f"{server.url}/count").text)


def test_there_are_enough_cases():
    assert len(CASES) >= 60


@pytest.mark.parametrize("name", sorted(CASES))
def test_hostile_request(server, name):
    request, status = CASES[name]
    before = served(server)
    with server.connect() as sock:
        raw = raw_exchange(sock, request + SMUGGLED)
    assert raw.startswith(b"HTTP/1.1 %d " % status), raw[:120]
    assert raw.count(b"HTTP/1.1 ") == 1, raw
    assert b"connection: close" in raw.lower()
    assert raw.endswith(b"<EOF>")
    # Only our own /count calls ran: the smuggled request never did.
    assert served(server) == before + 1


def test_each_rejection_is_logged_once(server):
    import time

    before = server.stderr_text().count("Invalid HTTP request")
    with server.connect() as sock:
        raw_exchange(sock, CASES["cl_and_te"][0])
    time.sleep(0.2)
    text = server.stderr_text()
    assert text.count("Invalid HTTP request") == before + 1
    assert "panicked" not in text
