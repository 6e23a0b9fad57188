"""`ferrocorn check APP [--path P]... [--json] [--check-timeout S] [serve options]`.

Boots the app as `ferrocorn APP [serve options]` would (a real master and workers,
lifespan startup), with the hidden `--check-report DIR` option that makes each worker
run the plain-python contract probe (python/ferrocorn/_check.py) before it reports
ready. Then it compares each worker's report with a fresh `python -c`'s, requests each
--path (2xx or 3xx expected), stops the server gracefully (lifespan shutdown) and
prints a report. Exit code 0 when every check passed, 1 otherwise, 2 for a usage error.
Unless --port, --uds or --fd is given it binds a free port, so it can run beside a
server already on port 8000.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from typing import Any

from ferrocorn import _check, _options
from ferrocorn._process import Master

USAGE = """\
usage: ferrocorn check APP [--path PATH]... [--json] [--check-timeout SECONDS] [OPTIONS]

Boot APP as `ferrocorn APP [OPTIONS]` would, verify inside each worker that the app
sees a plain-python process (signal handlers, mask, ignored signals, inherited fds,
child exit codes), request each --path (2xx/3xx expected), stop gracefully (lifespan
shutdown) and report. Exit code 0 if every check passed, 1 if one failed.

  --path PATH            request GET PATH once the server is ready (repeatable)
  --json                 print the report as JSON on stdout
  --check-timeout SECS   how long boot, each request and the stop may take (default 60)
  OPTIONS                any option of `ferrocorn --help` (a free port unless --port,
                         --uds or --fd is given)
"""

DEFAULT_TIMEOUT = 60.0


class UsageError(Exception):
    pass


def parse(args: list[str]) -> dict[str, Any]:
    paths: list[str] = []
    as_json = False
    timeout = DEFAULT_TIMEOUT
    log_level = "info"
    serve: list[str] = []
    app = None
    i = 0

    def value(name: str) -> str:
        nonlocal i
        if "=" in args[i]:
            return args[i].split("=", 1)[1]
        if i + 1 >= len(args):
            raise UsageError(f"{name} needs a value")
        i += 1
        return args[i]

    while i < len(args):
        arg = args[i]
        name = arg.split("=", 1)[0]
        if name == "--path":
            path = value(name)
            paths.append(path if path.startswith("/") else "/" + path)
        elif arg == "--json":
            as_json = True
        elif name == "--check-timeout":
            try:
                timeout = float(value(name))
            except ValueError:
                raise UsageError("--check-timeout needs a number of seconds") from None
        elif name == "--log-level":
            log_level = value(name).lower()
        elif name == "--check-report":
            raise UsageError("--check-report is ferrocorn check's own")
        elif arg.startswith("-"):
            serve.append(arg)
            if _options.takes_value(arg) and i + 1 < len(args):
                i += 1
                serve.append(args[i])
        elif app is None:
            app = arg
        else:
            raise UsageError(f"unexpected argument {arg!r}")
        i += 1
    if app is None:
        raise UsageError("the APP to check is missing")
    if log_level not in _options.LOG_LEVELS:
        raise UsageError(f"--log-level must be one of {', '.join(_options.LOG_LEVELS)}")
    given = {a.split("=", 1)[0] for a in serve}
    if not given & {"--port", "--uds", "--fd"}:
        serve += ["--port", "0"]
    tls = any(a.split("=", 1)[0] == "--ssl-certfile" for a in serve)
    error_logfile = None
    for j, a in enumerate(serve):
        if a == "--error-logfile" and j + 1 < len(serve):
            error_logfile = serve[j + 1]
        elif a.startswith("--error-logfile="):
            error_logfile = a.split("=", 1)[1]
    return {
        "app": app,
        "paths": paths,
        "json": as_json,
        "timeout": timeout,
        "log_level": log_level,
        "serve": serve,
        "tls": tls,
        "error_logfile": error_logfile,
    }


def plain_python(timeout: float) -> dict:
    """The probe in a fresh `python -c`, started with this interpreter and its flags."""
    flags = subprocess._args_from_interpreter_flags()  # type: ignore[attr-defined]
    out = subprocess.run(
        [sys.executable, *flags, "-c", _check.baseline_source()],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=True,
    )
    return json.loads(out.stdout)


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.unix_path)
        self.sock = sock


def request(target: str, path: str, tls: bool, timeout: float) -> tuple[int | None, str]:
    """GET `path` with the standard library's client; (status, error)."""
    try:
        if target.startswith("unix socket "):
            conn: http.client.HTTPConnection = _UnixConnection(target[12:], timeout)
        else:
            hostport = target.split("://", 1)[1]
            host, _, port = hostport.rpartition(":")
            host = host.strip("[]")
            if host in ("0.0.0.0", "::"):
                host = "127.0.0.1" if host == "0.0.0.0" else "::1"
            if tls:
                context = ssl.create_default_context()
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
                conn = http.client.HTTPSConnection(
                    host, int(port), timeout=timeout, context=context
                )
            else:
                conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
        try:
            conn.request("GET", path, headers={"user-agent": "ferrocorn-check"})
            response = conn.getresponse()
            response.read()
            return response.status, ""
        finally:
            conn.close()
    except (OSError, http.client.HTTPException) as exc:
        return None, f"{type(exc).__name__}: {exc}"


def run_check(opts: dict[str, Any]) -> dict[str, Any]:
    report: dict[str, Any] = {"app": opts["app"], "checks": [], "workers": {}}
    checks: list[dict] = report["checks"]
    timeout = opts["timeout"]
    plain = plain_python(timeout)
    report["plain_python"] = plain
    directory = tempfile.mkdtemp(prefix="ferrocorn-check-")
    master = Master(
        [opts["app"], *opts["serve"], "--check-report", directory],
        log_level=opts["log_level"],
        forward=False,
        error_logfile=opts["error_logfile"],
    )
    try:
        master.start()
        try:
            master.wait_ready(timeout)
        except Exception as exc:
            detail = str(exc)
            if master.exit_code is not None:
                errors = master.errors().replace(
                    "ERROR:    Application failed to boot; stopping\n", ""
                )
                detail = errors.strip() or detail
                detail = f"exit code {master.exit_code}: {detail}"
            checks.append({"name": "boot", "ok": False, "detail": detail})
            report["log"] = master.log_text()
            return report
        pids = master.worker_pids
        checks.append(
            {
                "name": "boot",
                "ok": True,
                "detail": f"{len(pids)} worker(s) ready: app imported, lifespan startup done",
            }
        )
        # Each initial worker wrote its report before it reported ready.
        by_check: dict[str, list[dict]] = {}
        for pid in pids:
            path = os.path.join(directory, f"{pid}.json")
            try:
                with open(path) as f:
                    worker = json.load(f)
            except OSError as exc:
                worker = {"pid": pid, "error": f"no report: {exc}"}
            report["workers"][str(pid)] = worker
            if "error" in worker:
                by_check.setdefault("probe", []).append(
                    {"name": "probe", "ok": False, "detail": f"worker {pid}: {worker['error']}"}
                )
                continue
            for c in _check.compare(worker, plain):
                by_check.setdefault(c["name"], []).append({**c, "pid": pid})
        for name, results in by_check.items():
            bad = [r for r in results if not r["ok"]]
            if bad:
                detail = "; ".join(
                    r["detail"]
                    if r["detail"].startswith("worker ")
                    else f"worker {r['pid']}: {r['detail']}"
                    for r in bad
                )
                checks.append({"name": name, "ok": False, "detail": detail})
            else:
                checks.append({"name": name, "ok": True, "detail": results[0]["detail"]})

        target = master.listeners[0] if master.listeners else ""
        for path in opts["paths"]:
            status, error = request(target, path, opts["tls"], timeout)
            ok = status is not None and 200 <= status < 400
            checks.append(
                {
                    "name": f"GET {path}",
                    "ok": ok,
                    "status": status,
                    "detail": error or (f"{status}" + ("" if ok else " (2xx or 3xx expected)")),
                }
            )

        # A graceful stop: the master exits 0, every worker ran lifespan shutdown.
        began = time.monotonic()
        code = master.stop_and_wait(timeout)
        log = master.log_text()
        report["log"] = log
        started = log.count("Application startup complete.")
        finished = log.count("Application shutdown complete.")
        failures = []
        if code != 0:
            failures.append(f"the server exited with code {code}")
        if "Application shutdown failed" in log:
            failures.append("lifespan shutdown failed")
        elif finished < started:
            failures.append(f"lifespan shutdown completed in {finished} of {started} worker(s)")
        errors = master.errors().strip()
        if failures and errors:
            failures.append(errors)
        took = time.monotonic() - began
        detail = "graceful, " + (
            f"lifespan shutdown complete in {finished} worker(s)" if started else "no lifespan"
        )
        checks.append(
            {
                "name": "shutdown",
                "ok": not failures,
                "detail": "; ".join(failures) if failures else f"{detail} ({took:.1f} s)",
            }
        )
        return report
    finally:
        if not master.exited.is_set():
            master.stop_and_wait(10)
        shutil.rmtree(directory, ignore_errors=True)


def human(report: dict[str, Any]) -> str:
    lines = [f"ferrocorn check {report['app']}"]
    width = max(len(c["name"]) for c in report["checks"])
    for c in report["checks"]:
        mark = "ok  " if c["ok"] else "FAIL"
        detail = c["detail"].replace("\n", "\n" + " " * (width + 10))
        lines.append(f"  {mark}  {c['name']:<{width}}  {detail}")
    if report["ok"]:
        lines.append("passed")
    else:
        lines.append("FAILED: " + ", ".join(report["failed"]))
    return "\n".join(lines) + "\n"


def main(args: list[str]) -> int:
    if any(a in ("-h", "--help") for a in args):
        sys.stdout.write(USAGE)
        return 0
    try:
        opts = parse(args)
    except UsageError as exc:
        sys.stderr.write(USAGE + f"\nferrocorn check: error: {exc}\n")
        return 2
    report = run_check(opts)
    report["failed"] = [c["name"] for c in report["checks"] if not c["ok"]]
    report["ok"] = not report["failed"]
    if opts["json"]:
        json.dump(report, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        if not report["ok"] and report.get("log"):
            sys.stderr.write(report["log"])
        sys.stdout.write(human(report))
    return 0 if report["ok"] else 1
