"""WSGI (PEP 3333) on the worker's thread pool, against real servers: the environ,
wsgi.input, start_response and its exc_info rules, write(), the iterable's close()
(also when the client leaves), chunked responses, wsgi.file_wrapper, the thread pool's
queue and --limit-concurrency, HTTP/2 and TLS, Flask, Django and Falcon, and
`--interface auto` telling ASGI 3, ASGI 2 and WSGI apart. Every test app is wrapped in
wsgiref's validator, which fails a request on any PEP 3333 violation of ours."""

import hashlib
import os
import socket
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import trustme

from tests.server import APPS_DIR, Server, raw_exchange, run_to_exit

APP = "wsgi_apps:app"
WSGI = ("--interface", "wsgi")


@pytest.fixture(scope="module")
def server():
    with Server(APP, *WSGI, "--threads", "4", "--timeout-keep-alive", "30") as s:
        yield s


@pytest.fixture
def client(server):
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


def test_environ_has_every_required_key(client, server):
    r = client.get(
        "/environ?a=1&b=%C3%A9",
        headers=[("X-Dup", "one"), ("X-Dup", "two"), ("Content-Type", "text/x-test")],
    )
    assert r.status_code == 200
    env = r.json()
    assert env["REQUEST_METHOD"] == "GET"
    assert env["SCRIPT_NAME"] == ""
    assert env["PATH_INFO"] == "/environ"
    assert env["QUERY_STRING"] == "a=1&b=%C3%A9"
    assert env["CONTENT_TYPE"] == "text/x-test"
    assert "HTTP_CONTENT_TYPE" not in env
    assert env["SERVER_NAME"] == "127.0.0.1"
    assert env["SERVER_PORT"] == str(server.port)
    assert env["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert env["HTTP_X_DUP"] == "one,two"
    assert env["HTTP_HOST"] == f"127.0.0.1:{server.port}"
    assert env["REMOTE_ADDR"] == "127.0.0.1"
    assert env["wsgi.version"] == [1, 0]
    assert env["wsgi.url_scheme"] == "http"
    assert env["wsgi.multithread"] is True
    assert env["wsgi.multiprocess"] is False
    assert env["wsgi.run_once"] is False
    assert env["wsgi.input_terminated"] is True
    assert env["thread"].startswith("ferrocorn-wsgi-")


def test_forwarded_headers_from_a_trusted_proxy_reach_the_environ():
    # The test client is 127.0.0.1, trusted by default: its X-Forwarded-* name the client.
    with Server(APP, *WSGI, "--forwarded-host") as s:
        r = httpx.get(
            s.url + "/environ",
            headers={
                "X-Forwarded-For": "203.0.113.9, 127.0.0.1",
                "X-Forwarded-Proto": "https",
                "X-Forwarded-Host": "example.com",
            },
        )
        env = r.json()
        assert (env["REMOTE_ADDR"], env["REMOTE_PORT"]) == ("203.0.113.9", "0")
        assert env["wsgi.url_scheme"] == "https"
        assert env["HTTP_HOST"] == "example.com"
    # Untrusted peer: the headers change nothing.
    with Server(APP, *WSGI, "--forwarded-allow-ips", "10.0.0.1") as s:
        r = httpx.get(
            s.url + "/environ",
            headers={"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https"},
        )
        env = r.json()
        assert env["REMOTE_ADDR"] == "127.0.0.1"
        assert env["wsgi.url_scheme"] == "http"


def test_path_info_is_latin1_decoded_bytes(client):
    # PEP 3333: the percent-decoded path bytes, one char per byte (here UTF-8 "é" and a
    # lone latin-1 byte), never decoded as UTF-8 by the server.
    env = client.get("/environ/caf%C3%A9/%E9%2Fx?q=%C3%A9").json()
    assert env["PATH_INFO"] == "/environ/caf\u00c3\u00a9/\u00e9/x"
    assert env["PATH_INFO"].encode("latin-1").decode("utf-8", "replace").startswith("/environ/café")
    assert env["QUERY_STRING"] == "q=%C3%A9"
    assert env["RAW_URI"] == "/environ/caf%C3%A9/%E9%2Fx?q=%C3%A9"
    with Server(APP, *WSGI, "--root-path", "/prefix") as s:
        env = httpx.get(s.url + "/prefix/environ").json()
        assert env["SCRIPT_NAME"] == "/prefix"
        assert env["PATH_INFO"] == "/environ"
        # A path outside the root path is passed whole.
        assert httpx.get(s.url + "/environ").json()["PATH_INFO"] == "/environ"


def test_multiprocess_is_true_with_workers_and_single_thread_is_not_multithread():
    with Server(APP, *WSGI, "--workers", "2", "--threads", "1") as s:
        env = httpx.get(s.url + "/environ").json()
        assert env["wsgi.multiprocess"] is True
        assert env["wsgi.multithread"] is False


def test_input_read_with_content_length_and_chunked(client):
    body = os.urandom(3 * 1024 * 1024)
    r = client.post("/echo", content=body)
    assert r.status_code == 200 and r.content == body

    def chunks():
        for i in range(0, 200_000, 10_000):
            yield body[i : i + 10_000]

    r = client.post("/readn", content=chunks())  # chunked request body
    assert r.status_code == 200
    assert r.json() == {"total": 200_000, "pieces": 200}


def test_input_readline_limits_and_iteration(client):
    r = client.post("/lines", content=b"first line\nabcdef\nsecond\nthird")
    assert r.json() == {
        "first": "first line\n",
        "limited": "abc",
        "rest": ["def\n", "second\n", "third"],
    }
    r = client.post("/readlines", content=b"a\nb\n\nc")
    assert r.json() == ["a\n", "b\n", "\n", "c"]


def test_limit_request_body_applies_to_wsgi_input():
    with Server(APP, *WSGI, "--limit-request-body", "1000") as s:
        assert httpx.post(s.url + "/echo", content=b"x" * 1000).status_code == 200
        assert httpx.post(s.url + "/echo", content=b"x" * 1001).status_code == 413
        r = httpx.post(s.url + "/readn", content=iter([b"x" * 600, b"x" * 600]))
        assert r.status_code == 413


def test_write_callable_and_generator_are_chunked(server, client):
    r = client.get("/write")
    assert r.text == "written and returned"
    with server.connect() as sock:
        reply = raw_exchange(
            sock, b"GET /slow-stream HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", wait=3
        )
    head, _, body = reply.partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head.lower()
    assert body.endswith(b"0\r\n\r\n<EOF>")


def test_big_streamed_response_arrives_whole(client):
    r = client.get("/big")
    assert len(r.content) == 65536 * 200 and set(r.content) == {ord("y")}


def test_head_response_has_no_body(server):
    with server.connect() as sock:
        reply = raw_exchange(sock, b"HEAD /stream HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 200") and reply.endswith(b"\r\n\r\n<EOF>")


def test_errors_give_500_or_an_incomplete_response(server, client):
    r = client.get("/error-before")
    assert r.status_code == 500
    server.wait_for_log("boom before start_response")
    assert "Exception in WSGI application" in server.stderr_text()
    with server.connect() as sock:
        reply = raw_exchange(sock, b"GET /error-after HTTP/1.1\r\nHost: x\r\n\r\n", wait=2)
    assert b"partial" in reply and not reply.split(b"<EOF>")[0].endswith(b"0\r\n\r\n")
    assert reply.endswith(b"<EOF>")


def test_exc_info_replaces_a_response_not_sent_yet(client):
    r = client.get("/exc-info")
    assert r.status_code == 500 and r.text == "replaced by error page"


def test_close_is_called_on_success_and_on_client_disconnect(server, client):
    client.get("/stream")
    assert "/stream" in client.get("/closed").json()
    sock = server.connect()
    sock.sendall(b"GET /slow-stream HTTP/1.1\r\nHost: x\r\n\r\n")
    assert sock.recv(100).startswith(b"HTTP/1.1 200")
    sock.close()  # 200 chunks of 20 ms each: the app is mid-iteration
    deadline = time.monotonic() + 3
    while "/slow-stream" not in client.get("/closed").json():
        assert time.monotonic() < deadline, "close() not called after the client left"
        time.sleep(0.05)


def test_wsgi_errors_go_to_the_error_log(server, client):
    assert client.get("/errors").json() == "ok"
    server.wait_for_log("a line for the error log")


@pytest.fixture(scope="module")
def unvalidated():
    """The test app without wsgiref's validator, which hides the file_wrapper from us
    behind its own iterator."""
    with Server("wsgi_apps:raw_app", *WSGI, "--log-level", "debug") as s:
        yield s


@pytest.mark.parametrize("skip", [0, 1000])
def test_file_wrapper_sends_the_file_from_its_position(unvalidated, tmp_path, skip):
    data = os.urandom(5 * 1024 * 1024 + 7)
    path = tmp_path / "data.bin"
    path.write_bytes(data)
    r = httpx.get(f"{unvalidated.url}/file?{path}", headers={"X-Skip": str(skip)})
    assert r.status_code == 200
    assert r.headers["content-length"] == str(len(data) - skip)
    assert r.content == data[skip:]
    # The connection sent the file itself rather than the app's blocks.
    unvalidated.wait_for_log(f"file_wrapper: {path} from byte {skip}")


def test_saturated_pool_answers_503_beyond_limit_concurrency_and_loses_nothing_below():
    with Server(APP, *WSGI, "--threads", "2", "--limit-concurrency", "4") as s:

        def get(_):
            return httpx.get(s.url + "/sleep?0.6", timeout=30).status_code

        with ThreadPoolExecutor(4) as pool:
            assert sorted(pool.map(get, range(4))) == [200] * 4
        with ThreadPoolExecutor(7) as pool:
            codes = sorted(pool.map(get, range(7)))
        assert codes.count(200) == 4 and codes.count(503) == 3, codes


def test_requests_that_wait_get_more_threads():
    """A thread that only computes keeps serving the queue alone; requests that wait
    (here: sleep) make the pool wake its other threads, so 8 sleeps of 0.5 s on 8
    threads overlap instead of queueing behind one another."""
    with Server(APP, *WSGI, "--threads", "8") as s:

        def get(_):
            return httpx.get(s.url + "/sleep?0.5", timeout=30).status_code

        with ThreadPoolExecutor(8) as pool:
            started = time.monotonic()
            assert list(pool.map(get, range(8))) == [200] * 8
            elapsed = time.monotonic() - started
        assert elapsed < 2.0, elapsed  # one after the other would take 4 s


def test_slow_reader_is_given_up_after_timeout_write():
    with Server(APP, *WSGI, "--timeout-write", "1") as s:
        sock = s.connect()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
        s.wait_for_log("--timeout-write", timeout=15)
        with httpx.Client(base_url=s.url) as c:
            deadline = time.monotonic() + 5
            while "/big" not in c.get("/closed").json():
                assert time.monotonic() < deadline
                time.sleep(0.05)
        sock.close()


def test_hung_request_is_dumped_with_its_thread_and_the_worker_replaced():
    with Server(APP, *WSGI, "--timeout", "2") as s:
        first = s.wait_for_workers(1)
        with pytest.raises(httpx.HTTPError):
            httpx.get(s.url + "/hang", timeout=10)
        text = s.wait_for_log(r"(?s)Python stacks.*raw_app", timeout=15).string
        assert "ferrocorn-wsgi" in text or "Thread 0x" in text
        s.wait_for_workers(1, exclude=first)


def test_http2_and_tls(tmp_path):
    with Server(APP, *WSGI) as s:
        with httpx.Client(http1=False, http2=True, base_url=s.url, timeout=30) as c:
            env = c.get("/environ").json()
            assert env["SERVER_PROTOCOL"] == "HTTP/2"
            assert env["HTTP_HOST"] == f"127.0.0.1:{s.port}"
            body = os.urandom(300_000)
            assert c.post("/echo", content=body).content == body
            assert c.get("/big").content == b"y" * 65536 * 200
            data = os.urandom(1024 * 1024)
            (tmp_path / "f.bin").write_bytes(data)
            assert c.get(f"/file?{tmp_path / 'f.bin'}").content == data
    with Server("wsgi_apps:raw_app", *WSGI) as s:
        with httpx.Client(http1=False, http2=True, base_url=s.url, timeout=30) as c:
            r = c.get(f"/file?{tmp_path / 'f.bin'}")
            assert r.content == data and r.headers["content-length"] == str(len(data))
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "server.pem"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    tls = [
        "--ssl-certfile",
        str(tmp_path / "server.pem"),
        "--ssl-keyfile",
        str(tmp_path / "server.pem"),
    ]
    with Server("wsgi_apps:raw_app", *WSGI, *tls) as s:
        ctx = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
        for http2 in (False, True):
            with httpx.Client(verify=ctx, http2=http2, base_url=s.url, timeout=30) as c:
                assert c.get("/environ").json()["wsgi.url_scheme"] == "https"
                assert c.get(f"/file?{tmp_path / 'f.bin'}").content == data


# ----- frameworks -------------------------------------------------------------------


def test_flask_routes_stream_file_and_a_20_mb_upload():
    with Server("wsgi_flask:app", *WSGI) as s, httpx.Client(base_url=s.url, timeout=60) as c:
        assert c.get("/").text == "Hello from Flask"
        assert c.get("/json/ann?x=1").json() == {"hello": "ann", "args": {"x": "1"}}
        assert c.post("/form", data={"name": "bo", "n": "41"}).json() == {"name": "bo", "n": 42}
        r = c.get("/stream")
        assert r.text == "".join(f"line {i}\n" for i in range(5))
        assert r.headers["transfer-encoding"] == "chunked"
        r = c.get("/file")
        assert r.content == (APPS_DIR / "wsgi_flask.py").read_bytes()
        body = os.urandom(20 * 1024 * 1024)
        r = c.post("/upload", content=body)
        assert r.json() == {"size": len(body), "sha256": hashlib.sha256(body).hexdigest()}
        assert c.get("/missing").status_code == 404


def test_django_project():
    with (
        Server("wsgi_django:application", *WSGI, "--root-path", "/site") as s,
        httpx.Client(base_url=s.url, timeout=30) as c,
    ):
        assert c.get("/site/").text == "Hello from Django"
        info = c.get("/site/info?q=1").json()
        assert info == {
            "path": "/site/info",
            "script_name": "/site",
            "secure": False,
            "host": f"127.0.0.1:{s.port}",
            "query": {"q": "1"},
        }
        r = c.post("/site/form", data={"a": "1", "b": "two"})
        assert r.json() == {"method": "POST", "fields": {"a": "1", "b": "two"}}
        r = c.get("/site/stream")
        assert r.text == "".join(f"chunk {i}\n" for i in range(4))
        r = c.get("/site/file")
        assert r.content == (APPS_DIR / "wsgi_django.py").read_bytes()
        assert c.get("/site/nope").status_code == 404


def test_falcon():
    with Server("wsgi_falcon:app", *WSGI) as s, httpx.Client(base_url=s.url) as c:
        assert c.get("/things/cup?q=tea").json() == {"thing": "cup", "q": "tea"}
        r = c.post("/things/box", content=b"z" * 5000)
        assert r.status_code == 201 and r.json() == {"thing": "box", "received": 5000}


# ----- --interface ------------------------------------------------------------------


def test_interface_auto_serves_wsgi_and_asgi2_and_explicit_asgi2():
    with Server("wsgi_apps:hello") as s:
        for _ in range(20):
            r = httpx.get(s.url + "/")
            # A list body is handed over whole: always a Content-Length, never chunked.
            assert r.text == "Hello, world!" and r.headers["content-length"] == "13"
    # Framework app objects, unwrapped (wsgiref's validator takes *args: see below).
    with Server("wsgi_flask:flask_app") as s:
        assert httpx.get(s.url + "/").text == "Hello from Flask"
    with Server("wsgi_falcon:falcon_app") as s:
        assert httpx.get(s.url + "/things/a").json() == {"thing": "a", "q": None}
    for args in ((), ("--interface", "asgi2")):
        with Server("wsgi_apps:ASGI2", *args) as s:
            assert httpx.get(s.url + "/x").text == "asgi2 /x"


@pytest.mark.parametrize("app", ["wsgi_apps:ambiguous", "wsgi_apps:app"])
def test_interface_auto_says_when_it_cannot_tell(app):
    out = run_to_exit(app)
    assert out.returncode != 0
    assert "Could not tell whether" in out.stderr and "--interface" in out.stderr


def test_threads_are_plain_python_threads():
    """Every thread of a WSGI worker (the pool's, tokio's, the control reader) has the
    signal mask plain Python threads have: nothing blocked."""
    with Server("contract_probe_wsgi:app", *WSGI) as s:
        masks = httpx.get(s.url + "/thread_masks").json()
        assert len(masks) >= 4, masks
        assert all(blocked == [] for blocked in masks.values()), masks


def test_access_log_and_graceful_stop_finishes_running_requests():
    with Server(APP, *WSGI) as s:
        results = []
        slow = threading.Thread(
            target=lambda: results.append(httpx.get(s.url + "/sleep?1", timeout=30))
        )
        slow.start()
        time.sleep(0.3)
        os.kill(s.pid, 15)  # SIGTERM to the master: graceful
        slow.join(30)
        assert results and results[0].status_code == 200
        assert s.wait(20) == 0
        assert '"GET /sleep?1 HTTP/1.1" 200' in s.stdout_text()
        assert "Finished worker process" in s.stderr_text()


def test_expect_100_continue_is_answered_when_the_app_reads(server):
    with server.connect() as sock:
        sock.sendall(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
            b"Expect: 100-continue\r\nConnection: close\r\n\r\n"
        )
        assert sock.recv(100).startswith(b"HTTP/1.1 100 Continue")
        reply = raw_exchange(sock, b"hello")
    # (Chunked or not: the validator hands the body over as an iterator.)
    assert reply.startswith(b"HTTP/1.1 200") and b"hello" in reply and reply.endswith(b"<EOF>")


def test_ferrocorn_check_probes_a_wsgi_app():
    from tests.test_check import check

    out = check("wsgi_apps:hello", "--interface", "wsgi", "--workers", "2", "--path", "/")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "signal_mask       empty" in out.stdout and "GET /             200" in out.stdout


def test_http10_streamed_response_is_not_chunked(server):
    """An HTTP/1.0 client can't read chunks: a streamed body ends with the connection."""
    with server.connect() as sock:
        reply = raw_exchange(sock, b"GET /slow-stream HTTP/1.0\r\n\r\n", wait=3)
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200") and b"chunked" not in head.lower()
    assert body == b"x" * 1024 * 200 + b"<EOF>"


def test_max_requests_recycles_a_wsgi_worker():
    with Server("wsgi_apps:hello", "--max-requests", "5") as s:
        first = s.wait_for_workers(1)
        for _ in range(12):
            assert httpx.get(s.url + "/").status_code == 200
        s.wait_for_workers(1, exclude=first)


def test_a_request_running_past_the_graceful_timeout_does_not_hold_the_stop():
    with Server(APP, *WSGI, "--timeout-graceful-shutdown", "1") as s:
        slow = threading.Thread(
            target=lambda: pytest.raises(httpx.HTTPError, httpx.get, s.url + "/sleep?4", timeout=30)
        )
        slow.start()
        time.sleep(0.3)
        started = time.monotonic()
        os.kill(s.pid, 15)
        assert s.wait(20) == 0
        assert time.monotonic() - started < 4
        slow.join(10)
        assert "graceful shutdown timeout" in s.stderr_text()
