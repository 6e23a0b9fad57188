"""TLS (rustls) against a real server, with a throwaway CA made per test module."""

import json
import socket
import ssl

import httpx
import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from websockets.sync.client import connect

from tests.server import Server, run_to_exit

APP = "protocols:app"


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
    stranger = trustme.CA().issue_cert("stranger@example.com")
    stranger.private_key_and_cert_chain_pem.write_to_path(str(d / "stranger.pem"))
    # The same server key, encrypted as PKCS#8 with a password.
    key = serialization.load_pem_private_key(server_cert.private_key_pem.bytes(), None)
    encrypted = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"s3cret"),
    )
    (d / "key-encrypted.pem").write_bytes(encrypted)
    (d / "client-cert.pem").write_bytes(client.cert_chain_pems[0].bytes())
    return d


def tls_args(pki, *extra: str) -> list[str]:
    return ["--ssl-certfile", str(pki / "cert.pem"), "--ssl-keyfile", str(pki / "key.pem"), *extra]


def client_context(pki, cert: str | None = None, **kw) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    for name, value in kw.items():
        setattr(ctx, name, value)
    if cert:
        ctx.load_cert_chain(str(pki / cert))
    return ctx


@pytest.fixture(scope="module")
def server(pki):
    with Server(APP, *tls_args(pki)) as s:
        yield s


def test_https_scope(server, pki):
    assert server.url.startswith("https://")
    r = httpx.get(f"{server.url}/scope?x=1", verify=client_context(pki))
    scope = r.json()
    assert scope["scheme"] == "https"
    assert scope["query_string"] == "x=1"
    tls = scope["extensions"]["tls"]
    assert tls["tls_version"] in (0x0303, 0x0304)
    assert tls["cipher_suite"] > 0
    assert tls["client_cert_chain"] == []
    assert tls["client_cert_name"] is None
    assert tls["server_cert"] is None


def test_core_http_over_tls(server, pki):
    with httpx.Client(verify=client_context(pki)) as client:
        body = bytes(range(256)) * 4096
        assert client.post(f"{server.url}/echo", content=body).content == body
        streamed = client.get(f"{server.url}/stream").content
        assert len(streamed) == 80 * 65536
        assert streamed[65536 * 7] == 7
        head = client.head(f"{server.url}/")
        assert head.status_code == 200 and head.content == b""
        assert client.get(f"{server.url}/missing").status_code == 404
        # All of it on one kept-alive connection.
        assert client.get(f"{server.url}/").text == "Hello, world!"


def test_wss(server, pki):
    url = f"wss://{server.host}:{server.port}/scope"
    with connect(url, ssl=client_context(pki)) as ws:
        scope = json.loads(ws.recv())
    assert scope["scheme"] == "wss"
    assert "tls" in scope["extensions"]


def test_alpn(server, pki):
    ctx = client_context(pki)
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    with socket.create_connection((server.host, server.port)) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            assert tls.selected_alpn_protocol() == "h2"
    with httpx.Client(http2=True, verify=client_context(pki)) as client:
        r = client.get(f"{server.url}/scope")
        assert r.http_version == "HTTP/2"
        assert r.json()["http_version"] == "2"


def test_alpn_with_http_1_only(pki):
    with Server(APP, *tls_args(pki, "--http", "1")) as s:
        ctx = client_context(pki)
        ctx.set_alpn_protocols(["h2", "http/1.1"])
        with socket.create_connection((s.host, s.port)) as raw:
            with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                assert tls.selected_alpn_protocol() == "http/1.1"


def test_mutual_tls_required(pki):
    args = tls_args(pki, "--ssl-ca-certs", str(pki / "ca.pem"), "--ssl-cert-reqs", "2")
    with Server(APP, *args) as s:
        ok = httpx.get(f"{s.url}/scope", verify=client_context(pki, "client.pem"))
        tls = ok.json()["extensions"]["tls"]
        assert tls["client_cert_chain"][0] == (pki / "client-cert.pem").read_text()
        leaf = x509.load_pem_x509_certificate((pki / "client-cert.pem").read_bytes())
        assert tls["client_cert_name"] == leaf.subject.rfc4514_string()
        for refused in (client_context(pki), client_context(pki, "stranger.pem")):
            with pytest.raises(httpx.TransportError):
                httpx.get(f"{s.url}/", verify=refused)
        # Refusals cost nothing to others.
        assert httpx.get(f"{s.url}/", verify=client_context(pki, "client.pem")).status_code == 200


def test_mutual_tls_optional(pki):
    args = tls_args(pki, "--ssl-ca-certs", str(pki / "ca.pem"), "--ssl-cert-reqs", "1")
    with Server(APP, *args) as s:
        anonymous = httpx.get(f"{s.url}/scope", verify=client_context(pki)).json()
        assert anonymous["extensions"]["tls"]["client_cert_chain"] == []
        known = httpx.get(f"{s.url}/scope", verify=client_context(pki, "client.pem")).json()
        assert len(known["extensions"]["tls"]["client_cert_chain"]) >= 1


def test_minimum_version(pki):
    with Server(APP, *tls_args(pki, "--ssl-min-version", "1.3")) as s:
        old = client_context(pki, maximum_version=ssl.TLSVersion.TLSv1_2)
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{s.url}/", verify=old)
        assert httpx.get(f"{s.url}/", verify=client_context(pki)).status_code == 200


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
        assert httpx.get(f"{s.url}/", verify=client_context(pki)).text == "Hello, world!"


@pytest.mark.parametrize(
    "keyfile, password, expected",
    [
        ("key-encrypted.pem", "wrong", "wrong --ssl-keyfile-password"),
        ("key-encrypted.pem", None, "give --ssl-keyfile-password"),
        ("missing.pem", None, "Cannot read"),
    ],
)
def test_bad_key_is_one_clear_line(pki, keyfile, password, expected):
    args = ["--ssl-certfile", str(pki / "cert.pem"), "--ssl-keyfile", str(pki / keyfile)]
    if password:
        args += ["--ssl-keyfile-password", password]
    result = run_to_exit(APP, *args)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert expected in lines[0]
    assert "Traceback" not in result.stderr
