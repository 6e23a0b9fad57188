"""`ferrocorn check`: real `ferrocorn check` processes on real apps (tests/apps/,
examples/), their exit codes, human reports and --json reports."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.server import APPS_DIR

ROOT = Path(__file__).parent.parent
CONTRACT = [
    "boot",
    "signal_handlers",
    "signal_mask",
    "ignored_signals",
    "inherited_fds",
    "child_exit_codes",
]


def check(*args: str, cwd: Path = APPS_DIR, env: dict | None = None):
    return subprocess.run(
        [sys.executable, "-m", "ferrocorn", "check", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def check_json(*args: str, cwd: Path = APPS_DIR, env: dict | None = None):
    out = check(*args, "--json", cwd=cwd, env=env)
    report = json.loads(out.stdout)
    return out, report, {c["name"]: c for c in report["checks"]}


def test_hello_passes():
    out = check("examples.hello:app", "--path", "/", cwd=ROOT)
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "ferrocorn check examples.hello:app"
    assert lines[-1] == "passed"
    names = [line.split()[1] for line in lines[1:-1]]
    assert names == [*CONTRACT, "GET", "shutdown"]
    assert all(line.startswith("  ok    ") for line in lines[1:-1]), out.stdout
    assert "GET /  " in out.stdout and " 200" in out.stdout
    # A passing check prints no server log.
    assert out.stderr == ""


def test_fastapi_example_passes_with_json():
    out, report, checks = check_json(
        "examples.fastapi_app:app", "--path", "/json", "--path", "/docs", cwd=ROOT
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert report["ok"] is True and report["failed"] == []
    assert list(checks) == [*CONTRACT, "GET /json", "GET /docs", "shutdown"]
    assert checks["GET /json"]["status"] == 200 and checks["GET /docs"]["status"] == 200
    assert checks["shutdown"]["detail"].startswith(
        "graceful, lifespan shutdown complete in 1 worker(s)"
    )
    (worker,) = report["workers"].values()
    plain = report["plain_python"]
    assert worker["handlers"] == plain["handlers"]
    assert worker["handlers"]["SIGINT"] == "default_int_handler"
    assert worker["handlers"]["SIGCHLD"] == "SIG_DFL"
    assert worker["blocked"] == []
    assert worker["exit_codes"] == {"subprocess.run exit 3": 3, "os.system exit 5": 5}
    listeners = [f for f in worker["fds"] if f["listen"]]
    assert len(listeners) == 1 and listeners[0]["inherit"] is True
    # Nothing but stdio and the listener reaches the app's children.
    inherited = {f["fd"] for f in worker["fds"] if f["inherit"]}
    assert inherited == {0, 1, 2, listeners[0]["fd"]}


def test_two_workers_each_probed():
    out, report, checks = check_json(
        "check_apps:app", "--workers", "2", "--path", "/", "--path", "/moved"
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert len(report["workers"]) == 2
    assert {int(p) for p in report["workers"]} == {w["pid"] for w in report["workers"].values()}
    assert checks["boot"]["detail"].startswith("2 worker(s) ready")
    assert checks["GET /moved"]["status"] == 302 and checks["GET /moved"]["ok"] is True
    assert "lifespan shutdown complete in 2 worker(s)" in checks["shutdown"]["detail"]


def test_sigchld_handler_at_import_fails():
    out, report, checks = check_json("check_sigchld:app", "--path", "/")
    assert out.returncode == 1
    assert report["ok"] is False
    assert report["failed"] == ["signal_handlers"]
    assert checks["signal_handlers"]["detail"] == (
        "worker {}: SIGCHLD has handler check_sigchld.on_child (plain python: SIG_DFL)".format(
            *report["workers"]
        )
    )
    # The human report says the same.
    human = check("check_sigchld:app")
    assert human.returncode == 1
    assert human.stdout.splitlines()[-1] == "FAILED: signal_handlers"
    assert "SIGCHLD has handler check_sigchld.on_child" in human.stdout


def test_ignored_sigchld_loses_exit_codes():
    out, report, checks = check_json("check_sigchld_ign:app")
    assert out.returncode == 1
    assert report["failed"] == ["signal_handlers", "ignored_signals", "child_exit_codes"]
    assert (
        "SIGCHLD has handler SIG_IGN (plain python: SIG_DFL)" in checks["signal_handlers"]["detail"]
    )
    assert checks["ignored_signals"]["detail"].endswith("SIGCHLD is ignored (not in plain python)")
    assert checks["child_exit_codes"]["detail"].endswith(
        "subprocess.run exit 3 returned 0; os.system exit 5 returned -1"
    )


def test_unhealthy_path_fails(tmp_path):
    record = tmp_path / "record"
    out, report, checks = check_json(
        "check_apps:app",
        "--path",
        "/",
        "--path",
        "/health",
        env={"FERROCORN_TEST_RECORD": str(record)},
    )
    assert out.returncode == 1
    assert report["failed"] == ["GET /health"]
    assert checks["GET /health"]["status"] == 500
    assert checks["GET /health"]["detail"] == "500 (2xx or 3xx expected)"
    assert checks["GET /"]["ok"] is True
    # The server was still stopped gracefully: lifespan shutdown ran.
    assert checks["shutdown"]["ok"] is True
    assert record.read_text().startswith("shutdown ")
    human = check("check_apps:app", "--path", "/health")
    assert human.stdout.splitlines()[-1] == "FAILED: GET /health"


def test_failed_lifespan_startup_fails():
    out, report, checks = check_json("lifespan_app:failing", "--path", "/")
    assert out.returncode == 1
    assert report["failed"] == ["boot"]
    assert list(checks) == ["boot"]
    assert checks["boot"]["detail"] == (
        "exit code 3: ERROR:    Application startup failed. database unreachable"
    )
    # Human output: the server's log on stderr, then the report.
    human = check("lifespan_app:failing")
    assert human.returncode == 1
    assert "Application startup failed. database unreachable" in human.stderr
    assert human.stdout.splitlines()[-1] == "FAILED: boot"


def test_mask_ignored_signal_and_leaked_fd_fail():
    out, report, checks = check_json("check_leaky:app")
    assert out.returncode == 1
    assert report["failed"] == ["signal_mask", "ignored_signals", "inherited_fds"]
    assert checks["signal_mask"]["detail"].endswith("blocked on the event loop thread: SIGUSR1")
    assert checks["ignored_signals"]["detail"].endswith("SIGHUP is ignored (not in plain python)")
    assert " (pipe:[" in checks["inherited_fds"]["detail"]
    assert checks["inherited_fds"]["detail"].endswith("is inherited by the app's children")


def test_serve_options_are_passed_on():
    # A serve option (--root-path) and a bad one (a clap usage error: boot fails).
    out, report, checks = check_json("check_apps:app", "--root-path", "/api", "--path", "/")
    assert out.returncode == 0, out.stdout
    out, report, checks = check_json("check_apps:app", "--no-such-option")
    assert out.returncode == 1 and report["failed"] == ["boot"]
    assert "exit code 2" in checks["boot"]["detail"]
    assert "--no-such-option" in checks["boot"]["detail"]


def test_usage_errors():
    out = check()
    assert out.returncode == 2
    assert "the APP to check is missing" in out.stderr
    out = check("--help")
    assert out.returncode == 0 and out.stdout.startswith("usage: ferrocorn check APP")


def test_probe_does_not_change_what_it_measures():
    # Twice in one fresh interpreter: the second probe sees what the first saw.
    code = (
        "from ferrocorn import _check\n"
        "a = _check.probe(); b = _check.probe()\n"
        "assert a == b, (a, b)\n"
        "print('same')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout == "same\n", out.stderr


@pytest.mark.parametrize("app", ["check_apps:app"])
def test_check_leaves_nothing_running(app):
    out, report, checks = check_json(app)
    assert out.returncode == 0
    for pid in report["workers"]:
        assert not os.path.exists(f"/proc/{pid}") or _zombie(int(pid))


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_unix_socket_error_logfile_and_tls(tmp_path):
    import trustme

    # Over a Unix socket, with the log in a file (where check reads "ready" from).
    sock, log = tmp_path / "c.sock", tmp_path / "error.log"
    out, report, checks = check_json(
        "check_apps:app", "--uds", str(sock), "--error-logfile", str(log), "--path", "/u"
    )
    assert out.returncode == 0, out.stdout
    assert checks["GET /u"]["status"] == 200
    assert "ferrocorn running on unix socket" in log.read_text()
    # Over TLS (the check's client doesn't verify the certificate).
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(certfile))
    cert.private_key_pem.write_to_path(str(keyfile))
    out, report, checks = check_json(
        "check_apps:app",
        "--ssl-certfile",
        str(certfile),
        "--ssl-keyfile",
        str(keyfile),
        "--path",
        "/t",
    )
    assert out.returncode == 0, out.stdout
    assert checks["GET /t"]["status"] == 200
    assert "https://127.0.0.1:" in report["log"]
