"""The plain-python contract (DEVELOPERS.md): app code in a worker sees the process it
would see under plain `python`. The same probes run under `python` and inside ferrocorn
workers (1 and 2 workers, and again after a rolling restart) and must agree."""

import os
import signal
import sys
import time

import httpx
import pytest

from tests.server import Server, plain_python_contract

# glibc reserves signals 32 and 33 for itself; whether they are ignored depends on how
# the test runner was started, which plain python inherits and ferrocorn resets.
GLIBC_RESERVED = {32, 33}

PROBES = [
    "exit_codes",
    "asyncio_exit_codes",
    "fork_children",
    "start_methods",
]


@pytest.fixture(scope="module")
def plain():
    return plain_python_contract()


def assert_same_ignored(ours: list[int], plain: list[int]) -> None:
    """Same ignored signals as plain python, and never one more."""
    assert set(ours) <= set(plain), (ours, plain)
    assert set(ours) - GLIBC_RESERVED == set(plain) - GLIBC_RESERVED, (ours, plain)


def check_one_worker(server: Server, plain: dict) -> int:
    # One keep-alive connection: every probe below runs in the same worker.
    with httpx.Client(base_url=server.url, timeout=60) as client:
        own = client.get("/own_signals").json()
        # Point 2/4: no master handler (SIGUSR2 is caught by the app's own handler
        # only), plain python's ignored set, an empty mask in the loop thread.
        assert own["watched_caught"] == ["SIGUSR2"], own
        assert_same_ignored(own["ignored"], plain["own_signals"]["ignored"])
        assert own["main_thread_blocked"] == []
        # The app's own SIGUSR2 handler (installed in lifespan startup) is the only
        # non-default Python handler among the watched signals.
        expected = dict(plain["own_signals"]["python_handlers"])
        handlers = own["python_handlers"]
        assert "on_usr2" in handlers.pop("SIGUSR2")
        expected.pop("SIGUSR2")
        assert handlers == expected
        children = client.get("/exec_child_signals").json()
        for how in ("subprocess", "os_system"):
            ours, theirs = children[how], plain["exec_child_signals"][how]
            assert ours["SigBlk"] == theirs["SigBlk"] == [], how
            assert_same_ignored(ours["SigIgn"], theirs["SigIgn"])
        for probe in PROBES:
            assert client.get(f"/{probe}").json() == plain[probe], probe
        # Point 3: the app's own handler fires.
        pid = client.get("/pid").json()
        os.kill(pid, signal.SIGUSR2)
        deadline = time.monotonic() + 5
        while client.get("/usr2").json() < 1:
            assert time.monotonic() < deadline, "the app's SIGUSR2 handler never ran"
            time.sleep(0.05)
        # Point 4: signals sent to the forked children never reached this worker.
        assert client.get("/pid").json() == pid
    assert "Shutting down" not in server.stderr_text()
    return pid


# The same probes from an ASGI app on the event loop, and from a WSGI app on the worker's
# thread pool.
INTERFACES = {
    "asgi": ("contract_probe:app", "--lifespan", "on"),
    "wsgi": ("contract_probe_wsgi:app", "--interface", "wsgi"),
}


@pytest.mark.parametrize("interface", sorted(INTERFACES))
@pytest.mark.parametrize("workers", [1, 2])
def test_contract_holds_in_every_worker(plain, workers, interface):
    app, *args = INTERFACES[interface]
    with Server(app, "--workers", str(workers), *args) as s:
        first = s.wait_for_workers(workers)
        seen = {check_one_worker(s, plain) for _ in range(workers * 2)}
        assert seen <= first
        # After a rolling restart the new workers keep the contract too.
        s.signal(signal.SIGHUP)
        s.wait_for_workers(workers, exclude=first)
        s.wait_for_log("Rolling restart")
        check = s.stderr_text().split("Rolling restart", 1)[1]
        deadline = time.monotonic() + 20
        while check.count("Finished worker process") < workers:
            assert time.monotonic() < deadline
            time.sleep(0.1)
            check = s.stderr_text().split("Rolling restart", 1)[1]
        with httpx.Client(base_url=s.url, timeout=60) as client:
            assert client.get("/exit_codes").json() == plain["exit_codes"]
            own = client.get("/own_signals").json()
            assert own["watched_caught"] == ["SIGUSR2"] and own["main_thread_blocked"] == []
            assert client.get("/fork_children").json() == plain["fork_children"]


def ignoring_launcher(*signals: signal.Signals) -> list[str]:
    """A command prefix that execs the rest of its command line with `signals` ignored,
    as a supervisor or a shell can start a program. An ignored disposition survives
    exec, so plain python keeps them ignored, and so must every worker and its children."""
    names = ", ".join(f"signal.{s.name}" for s in signals)
    return [
        sys.executable,
        "-c",
        "import os, signal, sys\n"
        f"for s in ({names},):\n"
        "    signal.signal(s, signal.SIG_IGN)\n"
        "os.execv(sys.argv[1], sys.argv[1:])",
    ]


# Started the way `nohup` (SIGHUP) and a shell script's `cmd &` (SIGINT, SIGQUIT) start
# a program: those signals ignored from the start.
LAUNCHER_IGNORES = {int(signal.SIGHUP), int(signal.SIGINT), int(signal.SIGQUIT)}
IGNORING_LAUNCHER = ignoring_launcher(*map(signal.Signals, LAUNCHER_IGNORES))


def check_started_ignoring(server: Server, plain: dict) -> None:
    with httpx.Client(base_url=server.url, timeout=60) as client:
        own = client.get("/own_signals").json()
        assert LAUNCHER_IGNORES <= set(own["ignored"]), own
        assert_same_ignored(own["ignored"], plain["own_signals"]["ignored"])
        handlers, expected = own["python_handlers"], dict(plain["own_signals"]["python_handlers"])
        assert "on_usr2" in handlers.pop("SIGUSR2")  # the app's own, from lifespan startup
        expected.pop("SIGUSR2")
        assert handlers == expected  # SIGHUP: SIG_IGN, as under plain python
        children = client.get("/exec_child_signals").json()
        for how in ("subprocess", "os_system"):
            assert LAUNCHER_IGNORES <= set(children[how]["SigIgn"]), how
            assert_same_ignored(children[how]["SigIgn"], plain["exec_child_signals"][how]["SigIgn"])
        assert client.get("/exit_codes").json() == plain["exit_codes"]


# Started with SIGTERM ignored too (a supervisor that sets it so before exec): the
# workers own SIGTERM for their graceful stop, yet a child the app forks must start with
# it ignored, as under plain python started the same way.
TERM_IGNORING_LAUNCHER = ignoring_launcher(signal.SIGTERM, signal.SIGINT)


@pytest.mark.parametrize("workers", [1, 2])
def test_forked_children_find_sigterm_as_the_server_was_started_with(workers):
    probes = ["fork_child_signals"]
    plain = plain_python_contract(launcher=TERM_IGNORING_LAUNCHER, probes=probes)
    expected = plain["fork_child_signals"]
    assert {int(signal.SIGTERM), int(signal.SIGINT)} <= set(expected["SigIgn"]), expected
    cmd = [*TERM_IGNORING_LAUNCHER, sys.executable, "-m", "ferrocorn", "contract_probe:app"]
    cmd += ["--port", "0", "--workers", str(workers)]
    with Server("", cmd=cmd) as s:
        s.wait_for_workers(workers)
        for _ in range(workers * 2):
            child = httpx.get(f"{s.url}/fork_child_signals", timeout=60).json()
            assert_same_ignored(child.pop("SigIgn"), expected["SigIgn"])
            assert child == {k: v for k, v in expected.items() if k != "SigIgn"}
        # SIGTERM still stops the server gracefully: the master and the workers catch it.
        assert s.stop() == 0


@pytest.mark.parametrize("workers", [1, 2])
def test_signals_ignored_at_start_stay_ignored_as_under_plain_python(workers):
    probes = ["own_signals", "exec_child_signals", "exit_codes"]
    plain = plain_python_contract(launcher=IGNORING_LAUNCHER, probes=probes)
    assert LAUNCHER_IGNORES <= set(plain["own_signals"]["ignored"])  # the launcher worked
    cmd = [*IGNORING_LAUNCHER, sys.executable, "-m", "ferrocorn", "contract_probe:app"]
    cmd += ["--port", "0", "--workers", str(workers)]
    with Server("", cmd=cmd) as s:
        first = s.wait_for_workers(workers)
        for _ in range(workers * 2):
            check_started_ignoring(s, plain)
        # A hangup that reaches the workers (nohup's case: the terminal closed and the
        # shell signalled the whole job) leaves them serving.
        for pid in first:
            os.kill(pid, signal.SIGHUP)
        time.sleep(0.5)
        assert s.worker_pids() == first
        assert httpx.get(f"{s.url}/pid", timeout=10).json() in first
        # The master still acts on SIGHUP sent to it (a rolling restart), and the new
        # workers start with the same ignored signals.
        s.signal(signal.SIGHUP)
        s.wait_for_workers(workers, exclude=first)
        check_started_ignoring(s, plain)
