"""Running under orchestrators (docs/deployment.md): the built-in probes and
--shutdown-delay (Kubernetes), PID 1 orphan reaping, systemd socket activation and
sd_notify, the keep-alive advice, and every config of docs/deployment.md that this
machine can run."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest

from tests.server import Server, children_of, plain_python_contract

PROBES = ("--health-path", "/healthz", "--ready-path", "/readyz")


def get(url: str, path: str, timeout: float = 10.0) -> httpx.Response:
    """One request on a fresh connection (as kubelet probes)."""
    with httpx.Client(base_url=url, timeout=timeout, trust_env=False) as client:
        return client.get(path)


def app_calls(url: str) -> int:
    return get(url, "/calls").json()


class NotifyListener:
    """A datagram socket standing in for systemd's NOTIFY_SOCKET: keeps every message,
    in order, each as a dict of its assignments."""

    def __init__(self, address: str):
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)
        self.sock.settimeout(0.1)
        self.messages: list[tuple[float, dict[str, str]]] = []
        self._lock = threading.Lock()
        self._open = True
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        while self._open:
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if line)
            with self._lock:
                self.messages.append((time.monotonic(), fields))

    def all(self) -> list[dict[str, str]]:
        with self._lock:
            return [m for _, m in self.messages]

    def timed(self) -> list[tuple[float, dict[str, str]]]:
        with self._lock:
            return list(self.messages)

    def states(self) -> list[str]:
        """READY/RELOADING/STOPPING, in the order they came (STATUS and WATCHDOG aside)."""
        keys = ("READY", "RELOADING", "STOPPING")
        return [k for m in self.all() for k in keys if m.get(k) == "1"]

    def wait_for(self, predicate, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self):
                return
            time.sleep(0.02)
        raise AssertionError(f"notify messages so far: {self.all()}")

    def close(self) -> None:
        self._open = False
        self.sock.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def master_variables_are_hidden(url: str) -> None:
    seen = get(url, "/environment").json()
    assert seen["worker"] == {}, seen
    assert seen["child"] == [], seen


# --- Kubernetes: probes and --shutdown-delay -------------------------------------------


def test_probes_are_answered_without_the_app():
    with Server("deploy_app:app", *PROBES) as s:
        before = app_calls(s.url)
        for path in ("/healthz", "/readyz", "/readyz?full=1"):
            r = get(s.url, path)
            assert (r.status_code, r.text) == (200, "OK"), path
            assert r.headers["cache-control"] == "no-store"
        head = httpx.head(s.url + "/readyz", trust_env=False)
        assert head.status_code == 200 and head.content == b""
        # Several probes on one kept-alive connection.
        with httpx.Client(base_url=s.url, trust_env=False) as client:
            assert [client.get("/healthz").status_code for _ in range(3)] == [200] * 3
        # HTTP/2 (prior knowledge) is answered the same way.
        with httpx.Client(base_url=s.url, http1=False, http2=True, trust_env=False) as h2:
            r = h2.get("/readyz")
            assert (r.http_version, r.status_code, r.text) == ("HTTP/2", 200, "OK")
        # Only GET/HEAD of the exact paths are probes: the rest reaches the app.
        assert get(s.url, "/healthz/more").text == "hello"
        assert httpx.post(s.url + "/healthz", content=b"x", trust_env=False).text == "hello"
        assert app_calls(s.url) == before + 3  # /healthz/more, the POST, /calls itself
        # Probes are not access-logged (kubelet would fill the log); app requests are.
        logged = s.stdout_text()
        assert '"POST /healthz' in logged and "GET /healthz/more" in logged
        assert "GET /healthz HTTP" not in logged and "/readyz" not in logged


def test_shutdown_delay_keeps_serving_while_readiness_fails():
    delay = 2.0
    with Server("deploy_app:app", "--workers", "2", "--shutdown-delay", str(delay), *PROBES) as s:
        assert get(s.url, "/readyz").status_code == 200
        kept = httpx.Client(base_url=s.url, timeout=10, trust_env=False)
        assert kept.get("/").text == "hello"
        sent = time.monotonic()
        s.signal(signal.SIGTERM)
        s.wait_for_log("Shutting down in 2 s")
        timeline = []
        while time.monotonic() - sent < delay - 0.5:
            timeline.append(
                (
                    get(s.url, "/readyz").status_code,
                    get(s.url, "/healthz").status_code,
                    get(s.url, "/").status_code,  # a new connection still served
                    kept.get("/").status_code,  # and a kept-alive one
                )
            )
            time.sleep(0.1)
        assert len(timeline) >= 3
        assert set(timeline) == {(503, 200, 200, 200)}, timeline
        assert "Shutting down gracefully" not in s.stderr_text()
        # Then the drain, no earlier than the delay; a clean exit.
        s.wait_for_log("Shutting down gracefully", timeout=10)
        drained = time.monotonic()
        assert drained - sent >= delay - 0.1
        assert s.wait(20) == 0
        kept.close()
        log = s.stderr_text()
        assert log.index("Shutting down in") < log.index("Shutting down gracefully")
        with pytest.raises(httpx.TransportError):
            get(s.url, "/", timeout=2)


def test_a_second_term_skips_the_shutdown_delay():
    with Server("deploy_app:app", "--shutdown-delay", "30", *PROBES) as s:
        s.signal(signal.SIGTERM)
        s.wait_for_log("Shutting down in 30 s")
        assert get(s.url, "/readyz").status_code == 503
        sent = time.monotonic()
        s.signal(signal.SIGTERM)
        assert s.wait(15) == 0
        assert time.monotonic() - sent < 10


def test_liveness_and_watchdog_follow_the_event_loop(tmp_path):
    notify = NotifyListener(str(tmp_path / "notify"))
    env = {"NOTIFY_SOCKET": notify.address, "WATCHDOG_USEC": "600000"}
    try:
        with Server("deploy_app:app", *PROBES, env=env) as s:
            notify.wait_for(lambda n: "READY" in n.states())
            # WATCHDOG=1 every half WATCHDOG_USEC while the worker's loop beats.
            time.sleep(1.5)
            beats = [t for t, m in notify.timed() if m.get("WATCHDOG") == "1"]
            assert len(beats) >= 3, notify.all()
            blocker = threading.Thread(target=get, args=(s.url, "/block?seconds=10", 30))
            blocker.start()
            blocked_at = time.monotonic()
            seen = []
            while not seen or seen[-1] != (503, 503):
                assert time.monotonic() - blocked_at < 9, seen
                seen.append((get(s.url, "/healthz").status_code, get(s.url, "/readyz").status_code))
                time.sleep(0.2)
            failed_at = time.monotonic()
            # Answered by the I/O thread while the loop is stuck: alive until 5 s after
            # the last heartbeat (at most 1 s before the block began), then not.
            assert seen[0] == (200, 200), seen
            assert failed_at - blocked_at >= 3.9, seen
            # The loop is still blocked (10 s): no WATCHDOG=1 either.
            time.sleep(1.5)
            stalled_beats = [
                t
                for t, m in notify.timed()
                if m.get("WATCHDOG") == "1" and failed_at + 0.1 < t < failed_at + 1.5
            ]
            assert stalled_beats == [], "WATCHDOG=1 sent while the worker's loop was blocked"
            assert blocker.is_alive()
            blocker.join()
            deadline = time.monotonic() + 5
            while get(s.url, "/healthz").status_code != 200:
                assert time.monotonic() < deadline, "liveness did not come back"
                time.sleep(0.1)
            resumed = time.monotonic()
            notify.wait_for(
                lambda n: any(m.get("WATCHDOG") == "1" and t > resumed for t, m in n.timed()), 5
            )
    finally:
        notify.close()


# --- systemd: sd_notify -------------------------------------------------------------------


def test_notify_sends_every_state_in_order(tmp_path):
    notify = NotifyListener(str(tmp_path / "notify"))
    try:
        s = Server("deploy_app:app", "--workers", "2", env={"NOTIFY_SOCKET": notify.address})
        with s:
            notify.wait_for(lambda n: n.states() == ["READY"])
            ready = next(m for m in notify.all() if m.get("READY") == "1")
            assert ready["STATUS"] == "2 of 2 worker(s) ready"
            # READY=1 came once every worker was ready, not before.
            assert s.stderr_text().count("Worker ready") == 2
            master_variables_are_hidden(s.url)
            before = s.wait_for_workers(2)
            hup_at = time.monotonic_ns() // 1000
            s.signal(signal.SIGHUP)
            notify.wait_for(lambda n: n.states() == ["READY", "RELOADING", "READY"])
            s.wait_for_workers(2, exclude=before)
        notify.wait_for(lambda n: n.states() == ["READY", "RELOADING", "READY", "STOPPING"])
        assert s.proc.returncode == 0
        reloading = next(m for m in notify.all() if m.get("RELOADING") == "1")
        # MONOTONIC_USEC is CLOCK_MONOTONIC when the reload began (systemd checks it).
        assert 0 <= int(reloading["MONOTONIC_USEC"]) - hup_at < 2_000_000
        # READY=1 after the reload only once both new workers were ready.
        log = s.stderr_text().split("Rolling restart", 1)[1]
        assert log.count("Worker ready") >= 2
        assert "WATCHDOG" not in "".join(json.dumps(m) for m in notify.all())
    finally:
        notify.close()


def test_notify_to_an_abstract_socket():
    notify = NotifyListener(f"@ferrocorn-test-{os.getpid()}")
    try:
        with Server("deploy_app:app", env={"NOTIFY_SOCKET": notify.address}) as s:
            notify.wait_for(lambda n: n.states() == ["READY"])
            master_variables_are_hidden(s.url)
    finally:
        notify.close()


def test_watchdog_for_another_pid_is_not_ours(tmp_path):
    notify = NotifyListener(str(tmp_path / "notify"))
    env = {"NOTIFY_SOCKET": notify.address, "WATCHDOG_USEC": "200000", "WATCHDOG_PID": "1"}
    try:
        with Server("deploy_app:app", env=env):
            notify.wait_for(lambda n: "READY" in n.states())
            time.sleep(0.6)
            assert not any("WATCHDOG" in m for m in notify.all())
    finally:
        notify.close()


# --- systemd: socket activation --------------------------------------------------------

# Puts the inherited sockets at fd 3, 4, ... and sets LISTEN_PID to the pid that execs
# ferrocorn, as systemd does.
ACTIVATE = """
import os, sys
passed = [int(fd) for fd in sys.argv[1].split(",")]
fds = [os.dup(fd) for fd in passed]
targets = range(3, 3 + len(fds))
for fd in passed:
    if fd not in targets:
        os.close(fd)
for target, fd in zip(targets, fds):
    os.dup2(fd, target)
    os.set_inheritable(target, True)  # dup2 onto itself keeps os.dup's close-on-exec
os.environ["LISTEN_PID"] = str(os.getpid())
os.execv(sys.executable, [sys.executable, "-m", "ferrocorn", *sys.argv[2:]])
"""


def activated(sockets: dict[str, socket.socket], *args: str) -> Server:
    fds = ",".join(str(s.fileno()) for s in sockets.values())
    server = Server(
        "",
        cmd=[sys.executable, "-c", ACTIVATE, fds, "deploy_app:app", *args],
        env={"LISTEN_FDS": str(len(sockets)), "LISTEN_FDNAMES": ":".join(sockets)},
        pass_fds=[s.fileno() for s in sockets.values()],
    )
    for sock in sockets.values():
        sock.close()  # The server's copies are the only ones now.
    return server


def listening(count: int) -> list[socket.socket]:
    out = []
    for _ in range(count):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        out.append(s)
    return out


def test_listen_fds_serves_every_socket_and_hides_them():
    web, admin = listening(2)
    ports = [web.getsockname()[1], admin.getsockname()[1]]
    with activated({"web": web, "admin": admin}, "--workers", "2") as s:
        for port in ports:
            assert get(f"http://127.0.0.1:{port}", "/").text == "hello"
        master_variables_are_hidden(s.url)
        # The master keeps the passed fds close-on-exec: only workers get them.
        for fd in (3, 4):
            flags = re.search(r"flags:\s+(\d+)", open(f"/proc/{s.pid}/fdinfo/{fd}").read())
            assert int(flags.group(1), 8) & 0o2000000, fd
        assert "--port" not in " ".join(open(f"/proc/{s.pid}/cmdline").read().split("\0"))


def test_listen_fds_by_name():
    web, admin = listening(2)
    web_port, admin_port = web.getsockname()[1], admin.getsockname()[1]
    with activated({"web": web, "admin": admin}, "--systemd-socket-name", "admin") as s:
        assert s.port == admin_port
        assert get(s.url, "/").text == "hello"
        # The socket not asked for is closed, not left queueing connections.
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", web_port), timeout=2).close()


def test_listen_fds_with_a_name_systemd_did_not_pass():
    (web,) = listening(1)
    s = activated({"web": web}, "--systemd-socket-name", "api")
    assert s.wait(20) == 1
    assert "--systemd-socket-name api: systemd passed no socket of that name" in s.stderr_text()


def test_an_explicit_fd_wins_over_listen_fds():
    web, admin = listening(2)
    admin_port = admin.getsockname()[1]
    with activated({"web": web, "admin": admin}, "--fd", "4") as s:
        assert s.port == admin_port
        assert get(s.url, "/").text == "hello"
        master_variables_are_hidden(s.url)


def test_listen_fds_for_another_pid_are_ignored():
    # Inherited variables meant for a parent: bind --port as usual.
    s = Server("deploy_app:app", env={"LISTEN_PID": "1", "LISTEN_FDS": "1"})
    with s:
        assert get(s.url, "/").text == "hello"
        master_variables_are_hidden(s.url)


SOCKET_ACTIVATE = shutil.which("systemd-socket-activate")


@pytest.mark.skipif(
    SOCKET_ACTIVATE is None,
    reason="systemd-socket-activate is not installed (Debian package systemd; .ci/run installs it)",
)
def test_systemd_socket_activate_starts_on_the_first_connection(tmp_path):
    port = free_port()
    notify = NotifyListener(str(tmp_path / "notify"))
    cmd = [
        SOCKET_ACTIVATE,
        f"--listen=127.0.0.1:{port}",
        "--fdname=web",
        f"--setenv=NOTIFY_SOCKET={notify.address}",
        f"--setenv=PATH={os.environ['PATH']}",
        sys.executable,
        "-m",
        "ferrocorn",
        "deploy_app:app",
        "--systemd-socket-name",
        "web",
    ]
    s = Server("", cmd=cmd)
    try:
        s.wait_for_log(r"Listening on 127\.0\.0\.1:\d+", timeout=10)
        assert notify.all() == []  # nothing runs before a client comes
        # The first client's connection waits in the socket's queue while ferrocorn
        # boots, and is answered.
        assert get(f"http://127.0.0.1:{port}", "/", timeout=30).text == "hello"
        s.start()
        assert s.port == port
        notify.wait_for(lambda n: n.states() == ["READY"])
        master_variables_are_hidden(s.url)
    finally:
        assert s.stop() == 0
        notify.close()
    assert notify.states() == ["READY", "STOPPING"]


# --- PID 1 --------------------------------------------------------------------------------


def unshare_works() -> bool:
    try:
        return (
            subprocess.run(
                ["unshare", "--pid", "--fork", "--mount-proc", "true"], timeout=10
            ).returncode
            == 0
        )
    except (OSError, subprocess.TimeoutExpired):
        return False


needs_pid_namespace = pytest.mark.skipif(
    not unshare_works(),
    reason="`unshare --pid --fork --mount-proc` is not permitted here (needs root or "
    "user namespaces)",
)


def as_pid1(app: str, *args: str) -> Server:
    """ferrocorn as PID 1 of a new pid namespace, as in a container without an init."""
    cmd = ["unshare", "--pid", "--fork", "--mount-proc"]
    return Server(app, cmd=[*cmd, sys.executable, "-m", "ferrocorn", app, "--port", "0", *args])


def namespace_master(server: Server) -> int:
    """The master's pid as the test sees it (the namespace's PID 1)."""
    (pid,) = children_of(server.pid)
    return pid


def zombie_children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(stat[1]) == pid and stat[0] == "Z":
                found.append(int(entry))
    return found


def commands_of_children(pid: int) -> list[str]:
    out = []
    for child in children_of(pid):
        try:
            out.append(open(f"/proc/{child}/comm").read().strip())
        except OSError:
            pass
    return out


@needs_pid_namespace
def test_pid1_reaps_orphans_but_never_a_workers_child():
    with as_pid1("deploy_app:app", "--workers", "2") as s:
        s.wait_for_log("Running as PID 1")
        master = namespace_master(s)
        workers = children_of(master)
        orphans_seen = False
        with httpx.Client(base_url=s.url, timeout=10, trust_env=False) as client:
            for _ in range(20):
                assert client.get("/orphan").text == "started"
                # The background sleeps are handed to the master (the namespace's init).
                orphans_seen |= "sleep" in commands_of_children(master)
        assert orphans_seen
        time.sleep(1.0)
        assert zombie_children(master) == []
        assert children_of(master) == workers
        # Stopping as PID 1 still works and exits 0.
        os.kill(master, signal.SIGTERM)
        assert s.wait(20) == 0


@needs_pid_namespace
def test_pid1_keeps_the_plain_python_contract():
    plain = plain_python_contract()
    with as_pid1("contract_probe:app", "--workers", "2", "--lifespan", "on") as s:
        s.wait_for_log("Running as PID 1")
        with httpx.Client(base_url=s.url, timeout=60, trust_env=False) as client:
            for _ in range(2):  # both workers, most likely
                for probe in ("exit_codes", "asyncio_exit_codes", "fork_children"):
                    # A worker's children stay the worker's: their exit codes are right.
                    assert client.get(f"/{probe}").json() == plain[probe], probe
        assert "Worker [" not in s.stderr_text().replace("Worker ready [", "")
        # (`unshare` ignores TERM itself: stop the namespace's PID 1, as `docker stop`.)
        os.kill(namespace_master(s), signal.SIGTERM)
        assert s.wait(20) == 0


def test_workers_that_keep_dying_stop_the_master_nonzero():
    with Server("deploy_app:app") as s:
        for _ in range(20):
            if s.proc.poll() is not None:
                break
            with pytest.raises(httpx.TransportError):
                get(s.url, "/crash", timeout=20)
        assert s.wait(20) == 1
    assert "workers keep dying (5 times within 60s)" in s.stderr_text()
    assert s.stderr_text().count("starting a new one") == 4


# --- the keep-alive advice ----------------------------------------------------------------

ADVICE = "is not longer than common balancer idle timeouts"


@pytest.mark.parametrize(
    "args, warned",
    [
        ((), False),  # forwarded headers trusted from loopback only
        (("--forwarded-allow-ips", "127.0.0.0/8,::1,unix:"), False),
        (("--forwarded-allow-ips", "10.0.0.0/8"), True),
        (("--forwarded-allow-ips", "*", "--workers", "2"), True),
        (("--forwarded-allow-ips", "*", "--no-proxy-headers"), False),
        (("--forwarded-allow-ips", "10.0.0.0/8", "--timeout-keep-alive", "75"), False),
    ],
)
def test_keep_alive_advice_behind_balancers(args, warned):
    with Server("deploy_app:app", *args) as s:
        assert s.stderr_text().count(ADVICE) == (1 if warned else 0), s.stderr_text()


# --- docs/deployment.md: every config, run where this machine can --------------------


def doc_files() -> dict[str, str]:
    from tests.test_docs import ROOT, parse

    blocks = parse(ROOT / "docs" / "deployment.md")
    return {b.attrs["file"]: b.text for b in blocks if "file" in b.attrs}


def option(args: list[str], name: str) -> str:
    """The value of --name in a command line (`--name=V` or `--name V`)."""
    for i, arg in enumerate(args):
        if arg == name:
            return args[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    raise AssertionError(f"{name} is not in {args}")


def with_test_app(args: list[str]) -> list[str]:
    """The doc's command line serving tests/apps/deploy_app.py on a free port."""
    out = ["deploy_app:app" if a == "main:app" else a for a in args]
    out = [re.sub(r"^--port=\d+$", "--port=0", a) for a in out]
    if "--port" in out:
        out[out.index("--port") + 1] = "0"
    return out


def unit_settings(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line and line[0] != "#")


def test_doc_dockerfile_command_runs_as_pid1():
    dockerfile = doc_files()["Dockerfile"]
    entrypoint = json.loads(re.search(r"^ENTRYPOINT (\[.*\])$", dockerfile, re.M).group(1))
    cmd = json.loads(re.search(r"^CMD (\[.*\])$", dockerfile, re.M).group(1))
    assert entrypoint == ["ferrocorn"]  # the exec form: ferrocorn is PID 1
    assert re.search(r"^USER app$", dockerfile, re.M)  # not root
    args = with_test_app(cmd)
    if not unshare_works():
        pytest.skip("no pid namespace here: unshare --pid --fork is not permitted")
    server = Server(
        "",
        cmd=[
            "unshare",
            "--pid",
            "--fork",
            "--mount-proc",
            sys.executable,
            "-m",
            "ferrocorn",
            *args,
        ],
    )
    with server as s:
        s.wait_for_log("Running as PID 1")
        url = f"http://127.0.0.1:{s.port}"
        assert get(url, option(cmd, "--health-path")).status_code == 200
        assert get(url, option(cmd, "--ready-path")).status_code == 200
        assert get(url, "/orphan").text == "started"
        os.kill(namespace_master(s), signal.SIGTERM)  # docker stop
        assert s.wait(20) == 0


def test_doc_kubernetes_deployment_stops_within_its_grace_period():
    yaml = pytest.importorskip("yaml")
    manifest = yaml.safe_load(doc_files()["deployment.yaml"])
    pod = manifest["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    args = container["args"]
    delay = float(option(args, "--shutdown-delay"))
    drain = float(option(args, "--timeout-graceful-shutdown"))
    grace = pod["terminationGracePeriodSeconds"]
    # The whole stop fits: the delay, the drain, the master's 5 s lifespan margin.
    assert delay + drain + 5 <= grace
    # The probes are the built-in ones, and nothing relies on a preStop sleep.
    assert container["readinessProbe"]["httpGet"]["path"] == option(args, "--ready-path")
    assert container["startupProbe"]["httpGet"]["path"] == option(args, "--ready-path")
    assert container["livenessProbe"]["httpGet"]["path"] == option(args, "--health-path")
    assert "lifecycle" not in container
    # The readiness probe notices within the delay.
    probe = container["readinessProbe"]
    assert probe["periodSeconds"] * probe["failureThreshold"] < delay
    # Behind a balancer with these args: no keep-alive advice (75 s > 60 s).
    with Server("", cmd=[sys.executable, "-m", "ferrocorn", *with_test_app(args)]) as s:
        url = f"http://127.0.0.1:{s.port}"
        assert ADVICE not in s.stderr_text()
        ready, live = option(args, "--ready-path"), option(args, "--health-path")
        assert get(url, ready).status_code == 200
        sent = time.monotonic()
        s.signal(signal.SIGTERM)  # what the kubelet sends
        s.wait_for_log("Shutting down in")
        statuses = set()
        while time.monotonic() - sent < delay - 1:
            statuses.add(
                (get(url, ready).status_code, get(url, live).status_code, get(url, "/").status_code)
            )
            time.sleep(0.25)
        assert statuses == {(503, 200, 200)}
        assert s.wait(grace) == 0
        assert delay - 0.1 <= time.monotonic() - sent < grace


@pytest.mark.skipif(
    SOCKET_ACTIVATE is None,
    reason="systemd-socket-activate is not installed (Debian package systemd; .ci/run installs it)",
)
def test_doc_systemd_units_under_socket_activation(tmp_path):
    files = doc_files()
    socket_unit = unit_settings(files["ferrocorn.socket"])
    service = unit_settings(files["ferrocorn.service"])
    assert service["Type"] == "notify" and service["NotifyAccess"] == "main"
    assert service["KillMode"] == "mixed"
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    exec_start = service["ExecStart"].split()
    assert exec_start[0].endswith("/bin/ferrocorn")
    args = exec_start[1:]
    drain = float(option(args, "--timeout-graceful-shutdown"))
    assert drain + 5 < float(service["TimeoutStopSec"])
    assert float(service["WatchdogSec"]) > 30  # above --timeout's default
    assert option(args, "--systemd-socket-name") == socket_unit["FileDescriptorName"]
    host, _, _ = socket_unit["ListenStream"].rpartition(":")
    port = free_port()
    notify = NotifyListener(str(tmp_path / "notify"))
    cmd = [
        SOCKET_ACTIVATE,
        f"--listen={host}:{port}",
        f"--fdname={socket_unit['FileDescriptorName']}",
        f"--setenv=NOTIFY_SOCKET={notify.address}",
        # systemd sets WATCHDOG_USEC from WatchdogSec=; a short one to see it work.
        "--setenv=WATCHDOG_USEC=500000",
        f"--setenv=PATH={os.environ['PATH']}",
        sys.executable,
        "-m",
        "ferrocorn",
        *with_test_app(args),
    ]
    s = Server("", cmd=cmd)
    try:
        s.wait_for_log(r"Listening on ", timeout=10)
        assert get(f"http://{host}:{port}", "/", timeout=30).text == "hello"
        s.start()
        notify.wait_for(lambda n: n.states() == ["READY"])
        ready = next(m for m in notify.all() if m.get("READY") == "1")
        assert (
            ready["STATUS"]
            == f"{option(args, '--workers')} of {option(args, '--workers')} worker(s) ready"
        )
        notify.wait_for(lambda n: any(m.get("WATCHDOG") == "1" for m in n.all()), 5)
        master_variables_are_hidden(s.url)
        s.signal(signal.SIGHUP)  # ExecReload
        notify.wait_for(lambda n: n.states() == ["READY", "RELOADING", "READY"], 60)
        assert get(s.url, "/").text == "hello"
    finally:
        assert s.stop(30) == 0
        notify.close()
    assert notify.states() == ["READY", "RELOADING", "READY", "STOPPING"]


def test_doc_proxies_close_idle_connections_before_ferrocorn():
    files = doc_files()
    args = unit_settings(files["ferrocorn.service"])["ExecStart"].split()
    ours = float(option(args, "--timeout-keep-alive"))
    nginx = files["nginx.conf"]
    upstream = re.search(r"upstream ferrocorn \{(.*?)\}", nginx, re.S).group(1)
    assert float(re.search(r"keepalive_timeout (\d+)s;", upstream).group(1)) < ours
    assert "proxy_http_version 1.1;" in nginx and 'proxy_set_header Connection "";' in nginx
    yaml = pytest.importorskip("yaml")
    traefik = yaml.safe_load(files["traefik-dynamic.yml"])["http"]
    idle = traefik["serversTransports"]["ferrocorn"]["forwardingTimeouts"]["idleConnTimeout"]
    assert float(idle.removesuffix("s")) < ours
    health = traefik["services"]["web"]["loadBalancer"]["healthCheck"]["path"]
    k8s = yaml.safe_load(files["deployment.yaml"])["spec"]["template"]["spec"]["containers"][0]
    assert health == option(k8s["args"], "--ready-path")
    assert float(option(k8s["args"], "--timeout-keep-alive")) == ours
    # The ALB/nginx default (60 s) is exactly where the startup advice draws the line.
    assert ours > 60
