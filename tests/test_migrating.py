"""docs/migrating.md, row by row: each row of the uvicorn, gunicorn, granian and hypercorn
tables is a ferrocorn command line and the checks its last column names. This test reads
the rows from the document itself, so the table and what it claims can't drift apart;
a new row is one line of the document.

Each command runs as written, with `main:app` replaced by tests/apps/cli_app.py, every
port by a free one, unix socket paths and `--fd` numbers by the test's own, from a
directory holding the files the commands name (.env, ferrocorn.toml, cert.pem, ...).
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import trustme

from tests.server import APPS_DIR, Server

DOC = Path(__file__).resolve().parent.parent / "docs" / "migrating.md"
SERVERS = ("uvicorn", "gunicorn", "granian", "hypercorn")
ROW = re.compile(r"^\| (?P<theirs>.+?) \| `(?P<ours>[^`]+)` \| (?P<checks>.+?) \|$")
CHECK_KINDS = {
    "serves", "header", "env", "scope", "workers", "loop", "https", "http2", "http1-only",
    "quiet", "file", "log", "exits", "fresh-context",
}  # fmt: skip


@dataclass
class Row:
    server: str
    theirs: str
    command: str
    checks: list[str]

    @property
    def id(self) -> str:
        return f"{self.server}: {self.theirs}"


def rows() -> list[Row]:
    found, server = [], None
    for line in DOC.read_text().splitlines():
        if line.startswith("## "):
            name = line[3:].strip().lower()
            server = name if name in SERVERS else None
        match = ROW.match(line)
        if server and match:
            checks = [c.strip() for c in match["checks"].split(";")]
            found.append(Row(server, match["theirs"], match["ours"], checks))
    return found


def test_the_document_has_a_table_per_server_with_known_checks():
    table = rows()
    assert {r.server for r in table} == set(SERVERS)
    assert len(table) > 100
    for row in table:
        assert row.command.split()[0].endswith("ferrocorn") or "=" in row.command.split()[0]
        for check in row.checks:
            assert check.split()[0].rstrip(":") in CHECK_KINDS, (row.id, check)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    """What the commands name: an env file, a config file, TLS material."""
    d = tmp_path_factory.mktemp("files")
    (d / ".env").write_text("FROM_ENV_FILE=yes\n")
    (d / "ferrocorn.toml").write_text('root_path = "/from-config"\n')
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "::1", "localhost")
    cert.private_key_and_cert_chain_pem.write_to_path(str(d / "cert.pem"))
    cert.private_key_pem.write_to_path(str(d / "key.pem"))
    ca.cert_pem.write_to_path(str(d / "ca.pem"))
    return d


def free_port(family=socket.AF_INET, host="127.0.0.1") -> int:
    with socket.socket(family) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@dataclass
class Launch:
    argv: list[str]
    env: dict[str, str]
    url: str
    uds: str | None
    pass_fds: tuple[int, ...]


def prepare(command: str, workdir: Path, keep: list) -> Launch:
    """The row's command with the test's app, ports, socket paths and fds."""
    words = shlex.split(command)
    env = {}
    while "=" in words[0]:
        name, _, value = words.pop(0).partition("=")
        env[name] = value
    assert words.pop(0) == "ferrocorn"
    argv, address, uds, fds = [], None, None, []

    def tcp(host: str) -> str:
        nonlocal address
        connect = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
        family = socket.AF_INET6 if ":" in connect else socket.AF_INET
        port = free_port(family, connect)
        if address is None:
            address = (connect, port)
        return str(port)

    def inherited_fd() -> str:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        keep.append(sock)
        fds.append(sock.fileno())
        nonlocal address
        address = address or ("127.0.0.1", sock.getsockname()[1])
        return str(sock.fileno())

    host = "127.0.0.1"
    it = iter(words)
    for word in it:
        if word in ("main:app", "main:factory"):
            word = "cli_app:" + word.split(":")[1]
        elif word == "--host":
            host = next(it)
            argv += [word, host]
            continue
        elif word == "--port":
            next(it)
            argv += [word, "PORT"]
            continue
        elif word == "--uds":
            next(it)
            uds = str(workdir / "app.sock")
            argv += [word, uds]
            continue
        elif word == "--fd":
            next(it)
            argv += [word, inherited_fd()]
            continue
        elif word in ("-b", "--bind"):
            spec = next(it)
            if spec.startswith("unix:"):
                uds = uds or str(workdir / "app.sock")
                spec = f"unix:{uds}"
            elif spec.startswith("fd://"):
                spec = f"fd://{inherited_fd()}"
            else:
                bind_host, _, _ = spec.rpartition(":")
                spec = f"{bind_host}:{tcp(bind_host.strip('[]'))}"
            argv += [word, spec]
            continue
        argv.append(word)
    if "PORT" in argv:
        argv[argv.index("PORT")] = tcp(host)
    if "FERROCORN_PORT" in env:
        env["FERROCORN_PORT"] = tcp(host)
    if address is None and uds is None:
        argv += ["--port", tcp(host)]
    if address is None:
        url = "http://localhost"
    else:
        connect, port = address
        url = f"http://[{connect}]:{port}" if ":" in connect else f"http://{connect}:{port}"
    return Launch(argv, env, url, uds, tuple(fds))


def client(launch: Launch, files: Path, https: bool, http2: bool = False) -> httpx.Client:
    verify = ssl.create_default_context(cafile=str(files / "ca.pem")) if https else True
    transport = httpx.HTTPTransport(uds=launch.uds, verify=verify, http1=not http2, http2=http2)
    base = launch.url.replace("http://", "https://") if https else launch.url
    return httpx.Client(transport=transport, base_url=base, timeout=5)


def wait_until_served(server: Server, launch: Launch, files: Path, https: bool) -> httpx.Response:
    deadline = time.monotonic() + 20
    argv = launch.argv
    http2_only = "--http" in argv and argv[argv.index("--http") + 1] == "2"
    with client(launch, files, https, http2=http2_only) as c:
        while True:
            try:
                return c.get("/?env=FROM_ENV_FILE&env=KEY")
            except httpx.TransportError:
                if server.proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"not served:\n{server.stderr_text()}") from None
                time.sleep(0.1)


@pytest.mark.parametrize("row", rows(), ids=lambda r: r.id)
def test_row(row: Row, files: Path, tmp_path: Path):
    for name in (".env", "ferrocorn.toml", "cert.pem", "key.pem", "ca.pem"):
        (tmp_path / name).write_bytes((files / name).read_bytes())
    keep: list[socket.socket] = []
    launch = prepare(row.command, tmp_path, keep)
    env = {k: "" for k in os.environ if k.startswith("FERROCORN_")}
    env |= {"PYTHONPATH": str(APPS_DIR), **launch.env}
    kinds = {c.split()[0].rstrip(":"): c for c in row.checks}

    if "exits" in kinds:
        result = subprocess.run(
            [sys.executable, "-m", "ferrocorn", *launch.argv],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=20,
            env={**os.environ, **env},
        )
        expected = kinds["exits"].split(":", 1)[1].strip()
        assert result.returncode == 2, result.stderr
        assert expected in result.stderr
        return

    cmd = [sys.executable, "-m", "ferrocorn", *launch.argv]
    server = Server("", cmd=cmd, cwd=tmp_path, env=env, pass_fds=launch.pass_fds)
    for sock in keep:
        sock.close()  # the server has its own copy now
    try:
        https = "https" in kinds
        response = wait_until_served(server, launch, files, https)
        assert response.status_code == 200
        data = response.json()
        for check in row.checks:
            kind, _, arg = check.partition(" ")
            run_check(kind, arg.strip(), response, data, server, launch, files, tmp_path)
    finally:
        server.signal(signal.SIGTERM)
        server.stop()


def run_check(kind, arg, response, data, server, launch, files, workdir):
    if kind in ("serves", "https"):
        return  # served above (over TLS for https)
    if kind == "header":
        name, _, value = arg.partition(": ")
        assert response.headers.get(name) == value
    elif kind == "env":
        name, _, value = arg.partition("=")
        assert data["env"].get(name) == value
    elif kind == "scope":
        key, _, value = arg.partition("=")
        assert str(data[key]) == value
    elif kind == "workers":
        assert len(server.wait_for_workers(int(arg))) == int(arg)
    elif kind == "loop":
        assert data["loop"] == arg
    elif kind == "fresh-context":
        assert data["marker"] == "unset"  # tests/apps/cli_app.py sets it at import
    elif kind in ("http2", "http1-only"):
        with client(launch, files, https=False, http2=True) as h2:
            if kind == "http2":
                assert h2.get("/").http_version == "HTTP/2"
            else:
                with pytest.raises(httpx.HTTPError):
                    h2.get("/")
    elif kind == "quiet":
        time.sleep(0.3)
        assert '"GET /' not in server.stdout_text()
    elif kind == "file":
        assert (workdir / arg).exists()
    elif kind == "log":
        assert server.stderr_text().count(arg) == 1, server.stderr_text()
    else:
        raise AssertionError(f"unknown check {kind!r}")
