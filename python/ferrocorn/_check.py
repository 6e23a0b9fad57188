"""The plain-python contract probe of `ferrocorn check` (python/ferrocorn/_check_cmd.py).

`probe()` reports what app code sees of its process: Python signal handlers, signals
caught and ignored at the C level, the signal mask of the calling thread, the file
descriptors a child would inherit, and the exit codes of children. The same code runs
twice: in a fresh `python -c` (the baseline) and in each worker, where worker.py calls
`write_report()` on the event loop thread, in a Task as a request would run, after
lifespan startup and before the worker reports ready (only when the hidden
`--check-report DIR` option is set: nothing of it runs otherwise).

The probe must not change what it measures: it reads /proc and the signal module's
getters (`signal.pthread_sigmask(SIG_BLOCK, [])` changes no mask), lists fds before it
opens any file and leaves out the one that listing uses, looks at sockets through a
socket object it detaches (never closes), and starts children only after every other
measurement. It imports only modules a worker has already loaded. Stdlib only: the
baseline runs this file's source under `python -c` without importing ferrocorn.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys

# ferrocorn's own C-level SIGTERM handler in workers (docs/signals.md): it drains the
# worker, and forked children get the default back.
FERROCORN_CAUGHT = {int(signal.SIGTERM)}
# glibc's reserved real-time signals (SIGCANCEL, SIGSETXID): glibc installs its own
# handler when a process starts its first thread (any Python program that starts a
# thread has it), and whether they are ignored depends on how the process was started.
GLIBC_RESERVED = {32, 33}


def _name(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"SIG{sig}"


def _status_masks(path: str = "/proc/self/status") -> dict[str, list[int]]:
    with open(path) as f:
        fields = dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
    return {
        key: [s for s in range(1, 65) if int(fields[key], 16) >> (s - 1) & 1]
        for key in ("SigIgn", "SigCgt", "SigBlk")
    }


def _handler(sig: int) -> str:
    handler = signal.getsignal(sig)
    if handler is None:
        return "not set from Python"
    if handler in (signal.SIG_DFL, signal.SIG_IGN):
        return signal.Handlers(handler).name
    if handler is signal.default_int_handler:
        return "default_int_handler"
    module = getattr(handler, "__module__", None) or "?"
    return f"{module}.{getattr(handler, '__qualname__', repr(handler))}"


def _fds() -> list[dict]:
    """Every open fd: what it is, whether a child would inherit it, whether it is a
    listening socket. Listed first, before the probe opens anything."""
    listed = os.listdir("/proc/self/fd")
    out = []
    for entry in sorted(int(e) for e in listed):
        try:
            inheritable = os.get_inheritable(entry)
        except OSError:
            continue  # the directory os.listdir had open
        try:
            target = os.readlink(f"/proc/self/fd/{entry}")
        except OSError:
            target = "?"
        listening = False
        if target.startswith("socket:"):
            sock = socket.socket(fileno=entry)
            try:
                listening = bool(sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN))
            except OSError:
                pass
            finally:
                sock.detach()
        out.append({"fd": entry, "target": target, "inherit": inheritable, "listen": listening})
    return out


def _child_exit_codes() -> dict[str, int]:
    status = os.system("exit 5")
    return {
        "subprocess.run exit 3": subprocess.run(["sh", "-c", "exit 3"]).returncode,
        # -1: system() could not wait for its child (it was reaped by someone else).
        "os.system exit 5": -1 if status == -1 else os.waitstatus_to_exitcode(status),
    }


def probe() -> dict:
    fds = _fds()
    masks = _status_masks()
    handlers = {
        _name(s): _handler(s)
        for s in sorted(int(s) for s in signal.valid_signals())
        if s not in (signal.SIGKILL, signal.SIGSTOP)
    }
    blocked = sorted(int(s) for s in signal.pthread_sigmask(signal.SIG_BLOCK, []))
    report = {
        "pid": os.getpid(),
        "python": sys.version.split()[0],
        "handlers": handlers,
        "caught": masks["SigCgt"],
        "ignored": masks["SigIgn"],
        "blocked": blocked,
        "fds": fds,
    }
    report["exit_codes"] = _child_exit_codes()
    return report


def write_report(directory: str) -> None:
    """In a worker: probe, then write `<directory>/<pid>.json` (atomically)."""
    try:
        report = probe()
    except Exception as exc:  # reported, never fatal to the worker
        import traceback

        report = {"pid": os.getpid(), "error": "".join(traceback.format_exception(exc))}
    path = os.path.join(directory, f"{os.getpid()}.json")
    with open(path + ".tmp", "w") as f:
        json.dump(report, f)
    os.replace(path + ".tmp", path)


async def run_in_worker(directory: str) -> None:
    """Called by worker.py: the probe in a Task of its own, as app code runs."""
    import asyncio

    async def probe_task() -> None:
        write_report(directory)

    await asyncio.get_running_loop().create_task(probe_task())


# ------------------------------------------------------------------- comparing
def compare(worker: dict, plain: dict) -> list[dict]:
    """The contract checks of one worker's report against plain python's."""
    checks = []

    def check(name: str, failures: list[str], ok_detail: str) -> None:
        checks.append(
            {
                "name": name,
                "ok": not failures,
                "detail": "; ".join(failures) if failures else ok_detail,
            }
        )

    # Signal handlers: Python-level the same as plain python; C-level caught signals
    # plain python's plus ferrocorn's own SIGTERM.
    failures = []
    for sig, handler in worker["handlers"].items():
        expected = plain["handlers"].get(sig)
        if handler != expected:
            failures.append(f"{sig} has handler {handler} (plain python: {expected})")
    extra_caught = set(worker["caught"]) - set(plain["caught"]) - FERROCORN_CAUGHT - GLIBC_RESERVED
    for sig in sorted(extra_caught):
        if not any(f.startswith(_name(sig) + " ") for f in failures):
            failures.append(f"{_name(sig)} is caught by a C-level handler (not in plain python)")
    check(
        "signal_handlers",
        failures,
        "plain python's (SIGINT: default_int_handler; ferrocorn's C-level SIGTERM only)",
    )

    # The mask of the event loop thread.
    blocked = [_name(s) for s in worker["blocked"]]
    check(
        "signal_mask",
        [f"blocked on the event loop thread: {', '.join(blocked)}"] if blocked else [],
        "empty",
    )

    # Ignored signals: the same as plain python's, python's own and those ferrocorn was
    # started with (nohup's SIGHUP) alike. SIGTERM is caught instead when it was ignored
    # at start (forked children get it back ignored), and glibc may have installed its
    # handler on its reserved signals by now.
    extra = set(worker["ignored"]) - set(plain["ignored"]) - GLIBC_RESERVED
    missing = set(plain["ignored"]) - set(worker["ignored"]) - GLIBC_RESERVED - FERROCORN_CAUGHT
    failures = [f"{_name(s)} is ignored (not in plain python)" for s in sorted(extra)]
    failures += [f"{_name(s)} is not ignored (plain python ignores it)" for s in sorted(missing)]
    check(
        "ignored_signals",
        failures,
        ", ".join(_name(s) for s in worker["ignored"]) + " (as plain python)",
    )

    # Fds a child of the app would inherit: stdio, the listeners, and what plain python
    # started the same way inherits; nothing else.
    plain_inherited = {f["fd"] for f in plain["fds"] if f["inherit"]}
    failures, listeners = [], []
    for f in worker["fds"]:
        if not f["inherit"] or f["fd"] in plain_inherited or f["fd"] <= 2:
            continue
        if f["listen"]:
            listeners.append(str(f["fd"]))
        else:
            failures.append(f"fd {f['fd']} ({f['target']}) is inherited by the app's children")
    check(
        "inherited_fds",
        failures,
        "stdio" + (f" and the listener(s) {', '.join(listeners)}" if listeners else ""),
    )

    # Exit codes of the app's children come back true.
    expected = {"subprocess.run exit 3": 3, "os.system exit 5": 5}
    got = worker["exit_codes"]
    failures = [f"{k} returned {got.get(k)}" for k, v in expected.items() if got.get(k) != v]
    check("child_exit_codes", failures, "subprocess.run -> 3, os.system -> 5")
    return checks


def baseline_source() -> str:
    """The `python -c` program that prints plain python's report."""
    with open(__file__) as f:
        source = f.read()
    return source + "\nprint(json.dumps(probe()))\n"
