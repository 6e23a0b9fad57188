"""docs/migrating.md, row by row: each row of the uvicorn, gunicorn, granian and hypercorn
tables is a ferrocorn command line and the checks its last column names. This test reads
the rows from the document itself, so the table and what it claims can't drift apart;
a new row is one line of the document.

Each command runs as written, with `main:app` replaced by tests/apps/cli_app.py
(`main:wsgi` by its WSGI app), every port by a free one, unix socket paths and `--fd`
numbers by the test's own, from a directory holding the files the commands name (.env,
ferrocorn.toml, cert.pem, log configs, ...).
"""

from __future__ import annotations

import json
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
    "quiet", "file", "log", "exits", "fresh-context", "request", "access-log", "colors",
    "no-colors", "reloads", "ignores", "proxy-header",
}  # fmt: skip
ANSI = "\x1b["
RELOADING = "Reloading..."


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
    write_log_configs(d)
    return d


# What every log config in `files` does: uvicorn's access records go to stdout with a
# mark, so the `access-log` check sees that the file was applied.
LOG_CONFIG_MARK = "from-log-config"


def write_log_configs(d: Path) -> None:
    config = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"marked": {"format": f"{LOG_CONFIG_MARK} %(message)s"}},
        "handlers": {
            "stdout": {
                "class": "logging.StreamHandler",
                "formatter": "marked",
                "stream": "ext://sys.stdout",
            }
        },
        "loggers": {
            "uvicorn.access": {"handlers": ["stdout"], "level": "INFO", "propagate": False}
        },
    }
    (d / "log.json").write_text(json.dumps(config))
    # JSON is YAML: the .yaml file still goes through the YAML loader.
    (d / "log.yaml").write_text(json.dumps(config, indent=2))
    (d / "log.toml").write_text(
        "version = 1\n"
        "disable_existing_loggers = false\n"
        "[formatters.marked]\n"
        f'format = "{LOG_CONFIG_MARK} %(message)s"\n'
        "[handlers.stdout]\n"
        'class = "logging.StreamHandler"\n'
        'formatter = "marked"\n'
        'stream = "ext://sys.stdout"\n'
        '[loggers."uvicorn.access"]\n'
        'handlers = ["stdout"]\n'
        'level = "INFO"\n'
        "propagate = false\n"
    )
    (d / "log.ini").write_text(
        "[loggers]\nkeys=root,access\n"
        "[handlers]\nkeys=stdout\n"
        "[formatters]\nkeys=marked\n"
        "[logger_root]\nlevel=WARNING\nhandlers=\n"
        "[logger_access]\nlevel=INFO\nhandlers=stdout\nqualname=uvicorn.access\npropagate=0\n"
        "[handler_stdout]\nclass=StreamHandler\nformatter=marked\nargs=(sys.stdout,)\n"
        f"[formatter_marked]\nformat={LOG_CONFIG_MARK} %(message)s\n"
    )


LOG_CONFIGS = ("log.json", "log.yaml", "log.toml", "log.ini")


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
        if word.startswith("main:"):
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


def wait_until_served(
    server: Server, launch: Launch, files: Path, https: bool, headers: dict[str, str]
) -> httpx.Response:
    deadline = time.monotonic() + 20
    argv = launch.argv
    http2_only = "--http" in argv and argv[argv.index("--http") + 1] == "2"
    with client(launch, files, https, http2=http2_only) as c:
        while True:
            try:
                return c.get("/?env=FROM_ENV_FILE&env=KEY", headers=headers)
            except httpx.TransportError:
                if server.proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"not served:\n{server.stderr_text()}") from None
                time.sleep(0.1)


@pytest.mark.parametrize("row", rows(), ids=lambda r: r.id)
def test_row(row: Row, files: Path, tmp_path: Path):
    for name in (".env", "ferrocorn.toml", "cert.pem", "key.pem", "ca.pem", *LOG_CONFIGS):
        (tmp_path / name).write_bytes((files / name).read_bytes())
    for check in row.checks:
        kind, _, arg = check.partition(" ")
        if kind in ("reloads", "ignores"):
            # There before the server starts, so the check's edit is a change to it.
            (tmp_path / arg).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / arg).write_text("VERSION = 1\n")
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
        headers = dict(
            c.partition(" ")[2].split(": ", 1) for c in row.checks if c.startswith("request ")
        )
        response = wait_until_served(server, launch, files, https, headers)
        assert response.status_code == 200
        data = response.json()
        for check in row.checks:
            kind, _, arg = check.partition(" ")
            run_check(kind, arg.strip(), response, data, server, launch, files, tmp_path)
    finally:
        server.signal(signal.SIGTERM)
        server.stop()


def run_check(kind, arg, response, data, server, launch, files, workdir):
    if kind in ("serves", "https", "request"):
        return  # served above (over TLS for https, with the request's headers)
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
    elif kind == "access-log":
        wait_for_access_line(server, launch, workdir, arg)
    elif kind in ("colors", "no-colors"):
        wait_for_access_line(server, launch, workdir, "GET /")
        logged = server.stderr_text() + server.stdout_text()
        assert (ANSI in logged) == (kind == "colors"), logged
    elif kind == "reloads":
        check_reload(server, launch, files, workdir / arg, expected=True)
    elif kind == "ignores":
        check_reload(server, launch, files, workdir / arg, expected=False)
    elif kind == "proxy-header":
        check_proxy_header(launch, arg)
    else:
        raise AssertionError(f"unknown check {kind!r}")


def wait_for_access_line(server: Server, launch: Launch, workdir: Path, text: str) -> None:
    """`text` in an access line: on stdout, or in the `--access-logfile` the row names."""
    argv = launch.argv
    logfile = argv[argv.index("--access-logfile") + 1] if "--access-logfile" in argv else "-"
    deadline = time.monotonic() + 5
    while True:
        if logfile == "-":
            written = server.stdout_text()
        else:
            written = (workdir / logfile).read_text() if (workdir / logfile).exists() else ""
        if any(text in line for line in written.splitlines()):
            return
        assert time.monotonic() < deadline, f"no access line with {text!r}:\n{written}"
        time.sleep(0.1)


def check_reload(server: Server, launch: Launch, files: Path, path: Path, expected: bool):
    """Edit `path`; with `expected`, new workers (none of the old ones) serve the next
    request; without, the same workers keep serving and nothing is reloaded."""
    before = server.wait_for_workers(len(server.worker_pids()))
    path.write_text("VERSION = 2\n")
    if not expected:
        time.sleep(1.5)  # well past the longest --reload-delay a row uses
        assert RELOADING not in server.stderr_text(), server.stderr_text()
        assert server.worker_pids() == before
        return
    server.wait_for_log(re.escape(RELOADING), timeout=10)
    server.wait_for_workers(len(before), exclude=before)
    with client(launch, files, https=False) as c:
        deadline = time.monotonic() + 10
        while True:
            try:
                served_by = c.get("/").json()["pid"]
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, server.stderr_text()
                time.sleep(0.1)
    assert served_by not in before


def check_proxy_header(launch: Launch, arg: str) -> None:
    """Send a PROXY v1 header claiming source `SRC` port 4711, then a GET. `SRC`: the app
    sees SRC:4711 as its client; `SRC closed`: the connection is closed unanswered."""
    source, _, outcome = arg.partition(" ")
    host, port = launch.url.removeprefix("http://").rsplit(":", 1)
    head = f"PROXY TCP4 {source} 127.0.0.1 4711 {port}\r\n"
    request = "GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall((head + request).encode())
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except ConnectionResetError:
            pass  # closed with unread bytes: a reset, as a refused header may get
    if outcome == "closed":
        assert answer == b""
        return
    status, _, body = answer.partition(b"\r\n\r\n")
    assert status.startswith(b"HTTP/1.1 200"), answer
    assert json.loads(body)["client"] == f"{source}:4711"
