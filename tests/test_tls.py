"""TLS (rustls) against a real server, with a throwaway CA made per test module: the https
scope and the ASGI tls extension, the core HTTP checks over TLS, wss, ALPN, mutual TLS,
the minimum version, encrypted keys and one-line startup errors."""

import json
import os
import socket
import ssl

import httpx
import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from websockets.sync.client import connect

from tests.core_checks import SEND_CHECKS, SHARED_CHECKS
from tests.server import Server, run_to_exit

APP = "proto_app:app"
HELLO = "Hello, world!"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    server_cert = ca.issue_cert("127.0.0.1", "localhost")
    server_cert.cert_chain_pems[0].write_to_path(str(d / "cert.pem"))
    for extra in server_cert.cert_chain_pems[1:]:
        extra.write_to_path(str(d / "cert.pem"), append=True)
    server_cert.private_key_pem.write_to_path(str(d / "key.pem"))
    ca.cert_pem.write_to_path(str(d / "ca.pem"))
    client = ca.issue_cert("client@example.com")
    client.private_key_and_cert_chain_pem.write_to_path(str(d / "client.pem"))
    (d / "client-cert.pem").write_bytes(client.cert_chain_pems[0].bytes())
    other_ca = trustme.CA()
    stranger = other_ca.issue_cert("stranger@example.com")
    stranger.private_key_and_cert_chain_pem.write_to_path(str(d / "stranger.pem"))
    # A key that is not the server certificate's.
    other_ca.issue_cert("127.0.0.1").private_key_pem.write_to_path(str(d / "other-key.pem"))
    # The server key, encrypted as PKCS#8 with a password.
    key = serialization.load_pem_private_key(server_cert.private_key_pem.bytes(), None)
    encrypted = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"s3cret"),
    )
    (d / "key-encrypted.pem").write_bytes(encrypted)
    return d


def tls_args(pki, *extra: str) -> list[str]:
    return ["--ssl-certfile", str(pki / "cert.pem"), "--ssl-keyfile", str(pki / "key.pem"), *extra]


def client_context(pki, cert: str | None = None, **kw) -> ssl.SSLContext:
    """Trusts the throwaway CA; `cert` names a PEM with the client's key and chain."""
    ctx = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    for name, value in kw.items():
        setattr(ctx, name, value)
    if cert:
        ctx.load_cert_chain(str(pki / cert))
    return ctx


def alpn(server, pki, offer: list[str]) -> str | None:
    """The protocol the server picks from `offer` in a bare TLS handshake."""
    ctx = client_context(pki)
    ctx.set_alpn_protocols(offer)
    with socket.create_connection((server.host, server.port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            return tls.selected_alpn_protocol()


@pytest.fixture(scope="module")
def server(pki):
    with Server(APP, *tls_args(pki)) as s:
        yield s


@pytest.fixture
def client(server, pki):
    with httpx.Client(verify=client_context(pki), base_url=server.url, timeout=20) as c:
        yield c


def test_https_scope_and_tls_extension(server, client):
    assert server.url.startswith("https://")
    assert "running on https://127.0.0.1:" in server.stderr_text()
    scope = client.get("/scope?x=1").json()
    assert scope["type"] == "http"
    assert scope["scheme"] == "https"
    assert scope["http_version"] == "1.1"
    assert scope["query_string"] == "x=1"
    assert scope["server"] == ["127.0.0.1", server.port]
    tls = scope["extensions"]["tls"]
    assert isinstance(tls["tls_version"], int)
    assert tls["tls_version"] in (0x0303, 0x0304)
    assert isinstance(tls["cipher_suite"], int) and tls["cipher_suite"] > 0
    assert tls["client_cert_chain"] == []  # ASGI: an empty iterable without a client cert
    assert tls["client_cert_name"] is None
    assert tls["client_cert_error"] is None
    assert tls["server_cert"] is None


def test_tls_12_client_is_served_by_default(server, pki):
    old = client_context(pki, maximum_version=ssl.TLSVersion.TLSv1_2)
    scope = httpx.get(f"{server.url}/scope", verify=old).json()
    assert scope["extensions"]["tls"]["tls_version"] == 0x0303


# The core HTTP/1.1 checks of test_http.py, over TLS.


def check_scope(client, server):
    r = client.get("/scope?a=1&b=%20", headers={"X-Custom": "Yes"})
    assert r.status_code == 200
    scope = r.json()
    assert scope["method"] == "GET"
    assert scope["path"] == "/scope"
    assert scope["raw_path"] == "/scope"
    assert scope["query_string"] == "a=1&b=%20"
    assert ["x-custom", "Yes"] in scope["headers"]
    assert scope["client"][0] == "127.0.0.1"


def check_chunked_streaming_response(client, server):
    r = client.get("/stream")
    assert r.headers["transfer-encoding"] == "chunked"
    assert len(r.content) == 80 * 65536
    assert [r.content[i * 65536] for i in range(80)] == list(range(80))


CORE_CHECKS = [check_scope, check_chunked_streaming_response] + SHARED_CHECKS + SEND_CHECKS


@pytest.mark.parametrize("check", CORE_CHECKS, ids=lambda f: f.__name__[6:])
def test_core_http_over_tls(check, client, server):
    check(client, server)


def test_wss(server, pki):
    base = f"wss://{server.host}:{server.port}"
    with connect(f"{base}/scope", ssl=client_context(pki)) as ws:
        scope = json.loads(ws.recv())
    assert scope["type"] == "websocket"
    assert scope["scheme"] == "wss"
    assert scope["path"] == "/scope"
    assert "websocket.http.response" in scope["extensions"]
    assert scope["extensions"]["tls"]["tls_version"] in (0x0303, 0x0304)
    with connect(f"{base}/echo", ssl=client_context(pki)) as ws:
        ws.send("over tls")
        assert ws.recv() == "over tls"
        ws.send(b"\x00\xff" * 40000)
        assert ws.recv() == b"\x00\xff" * 40000


def test_alpn_prefers_h2(server, pki):
    assert alpn(server, pki, ["h2", "http/1.1"]) == "h2"
    assert alpn(server, pki, ["http/1.1"]) == "http/1.1"
    with httpx.Client(http2=True, verify=client_context(pki), base_url=server.url) as client:
        r = client.get("/scope")
        assert r.http_version == "HTTP/2"
        scope = r.json()
        assert scope["http_version"] == "2"
        assert scope["scheme"] == "https"
        assert scope["extensions"]["tls"]["tls_version"] in (0x0303, 0x0304)
        body = os.urandom(1024 * 1024)
        r = client.post("/echo", content=body)
        assert r.http_version == "HTTP/2" and r.content == body


def test_alpn_with_http_1_only(pki):
    with Server(APP, *tls_args(pki, "--http", "1")) as s:
        assert alpn(s, pki, ["h2", "http/1.1"]) == "http/1.1"
        with httpx.Client(http2=True, verify=client_context(pki)) as client:
            r = client.get(f"{s.url}/scope")
        assert r.http_version == "HTTP/1.1"
        assert r.json()["http_version"] == "1.1"


def test_mutual_tls_required(pki):
    args = tls_args(pki, "--ssl-ca-certs", str(pki / "ca.pem"), "--ssl-cert-reqs", "2")
    with Server(APP, *args) as s:
        ok = httpx.get(f"{s.url}/scope", verify=client_context(pki, "client.pem"))
        assert ok.status_code == 200
        tls = ok.json()["extensions"]["tls"]
        leaf_pem = (pki / "client-cert.pem").read_text()
        assert tls["client_cert_chain"][0].strip() == leaf_pem.strip()
        assert tls["client_cert_name"]
        leaf = x509.load_pem_x509_certificate(leaf_pem.encode())
        assert tls["client_cert_name"] == leaf.subject.rfc4514_string()
        assert tls["client_cert_error"] is None
        # No certificate, and a certificate from another CA: both refused.
        for refused in (client_context(pki), client_context(pki, "stranger.pem")):
            with pytest.raises(httpx.TransportError):
                httpx.get(f"{s.url}/scope", verify=refused)
        # The refusals cost nothing to others.
        again = httpx.get(f"{s.url}/", verify=client_context(pki, "client.pem"))
        assert again.text == HELLO


def test_mutual_tls_optional(pki):
    args = tls_args(pki, "--ssl-ca-certs", str(pki / "ca.pem"), "--ssl-cert-reqs", "1")
    with Server(APP, *args) as s:
        anonymous = httpx.get(f"{s.url}/scope", verify=client_context(pki)).json()
        assert anonymous["extensions"]["tls"]["client_cert_chain"] == []
        assert anonymous["extensions"]["tls"]["client_cert_name"] is None
        known = httpx.get(f"{s.url}/scope", verify=client_context(pki, "client.pem")).json()
        chain = known["extensions"]["tls"]["client_cert_chain"]
        assert chain[0].strip() == (pki / "client-cert.pem").read_text().strip()
        assert known["extensions"]["tls"]["client_cert_name"]


def test_minimum_version_1_3(pki):
    with Server(APP, *tls_args(pki, "--ssl-min-version", "1.3")) as s:
        old = client_context(pki, maximum_version=ssl.TLSVersion.TLSv1_2)
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{s.url}/", verify=old)
        with socket.create_connection((s.host, s.port), timeout=5) as raw:
            with pytest.raises(ssl.SSLError):
                old.wrap_socket(raw, server_hostname="127.0.0.1")
        r = httpx.get(f"{s.url}/scope", verify=client_context(pki))
        assert r.json()["extensions"]["tls"]["tls_version"] == 0x0304


def test_encrypted_key_with_password(pki):
    args = [
        "--ssl-certfile",
        str(pki / "cert.pem"),
        "--ssl-keyfile",
        str(pki / "key-encrypted.pem"),
        "--ssl-keyfile-password",
        "s3cret",
    ]
    with Server(APP, *args) as s:
        assert httpx.get(f"{s.url}/", verify=client_context(pki)).text == HELLO


@pytest.mark.parametrize(
    "certfile, keyfile, password, named",
    [
        ("cert.pem", "key-encrypted.pem", "wrong", "key-encrypted.pem"),
        ("cert.pem", "key-encrypted.pem", None, "key-encrypted.pem"),
        ("cert.pem", "missing-key.pem", None, "missing-key.pem"),
        ("missing-cert.pem", "key.pem", None, "missing-cert.pem"),
        ("cert.pem", "other-key.pem", None, "other-key.pem"),
    ],
    ids=["wrong-password", "no-password", "missing-key", "missing-cert", "key-not-the-certs"],
)
def test_bad_tls_files_stop_startup_with_one_line(pki, certfile, keyfile, password, named):
    args = ["--ssl-certfile", str(pki / certfile), "--ssl-keyfile", str(pki / keyfile)]
    if password:
        args += ["--ssl-keyfile-password", password]
    result = run_to_exit(APP, *args)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert 1 <= len(lines) < 3, result.stderr
    assert any(str(pki / named) in line for line in lines), result.stderr
    if keyfile == "key-encrypted.pem":
        assert "password" in result.stderr.lower()
    assert "ferrocorn ready" not in result.stderr
