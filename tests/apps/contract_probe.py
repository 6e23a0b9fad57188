"""Probes of the plain-python contract (DEVELOPERS.md). Run as a script, it prints what
plain `python` gives; served by ferrocorn, each probe is an endpoint returning the same
JSON, so a test can compare the two point by point."""

import asyncio
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time

WATCHED = ["SIGCHLD", "SIGHUP", "SIGUSR1", "SIGUSR2", "SIGTTIN", "SIGTTOU", "SIGWINCH"]
usr2_hits = []


def status_masks(path="/proc/self/status"):
    with open(path) as f:
        return {
            k: int(v, 16)
            for k, v in (line.split(":\t") for line in f if line.startswith("Sig"))
            if k in ("SigIgn", "SigBlk", "SigCgt")
        }


def bits(mask):
    return sorted(sig for sig in range(1, 65) if mask & (1 << (sig - 1)))


def own_signals():
    """This process: ignored and caught signals, and the main thread's mask."""
    masks = status_masks()
    main_thread = status_masks(f"/proc/self/task/{threading.main_thread().native_id}/status")
    caught = bits(masks["SigCgt"])
    return {
        "ignored": bits(masks["SigIgn"]),
        "watched_caught": [n for n in WATCHED if getattr(signal, n) in caught],
        "main_thread_blocked": bits(main_thread["SigBlk"]),
        "python_handlers": {n: str(signal.getsignal(getattr(signal, n))) for n in WATCHED},
    }


def exec_child_signals():
    """What a child the app execs starts with (subprocess and os.system)."""
    out = subprocess.run(
        ["grep", "-E", "^Sig(Ign|Blk)", "/proc/self/status"], capture_output=True, text=True
    ).stdout
    via_subprocess = {k: bits(int(v, 16)) for k, v in (x.split(":\t") for x in out.splitlines())}
    with tempfile.NamedTemporaryFile("r") as f:
        os.system(f"grep -E '^Sig(Ign|Blk)' /proc/self/status > {f.name}")
        text = f.read()
    via_system = {k: bits(int(v, 16)) for k, v in (x.split(":\t") for x in text.splitlines())}
    return {"subprocess": via_subprocess, "os_system": via_system}


def exit_codes():
    sleeper = subprocess.Popen(["sleep", "30"])
    sleeper.terminate()
    pid = os.fork()
    if pid == 0:
        os._exit(7)
    _, status = os.waitpid(pid, 0)
    pipeline = subprocess.run(
        ["bash", "-c", "yes | head -n1 >/dev/null; echo ${PIPESTATUS[0]}"],
        capture_output=True,
        text=True,
    )
    return {
        "run_false": subprocess.run(["false"]).returncode,
        "run_exit_3": subprocess.run(["sh", "-c", "exit 3"]).returncode,
        "check_output": subprocess.check_output(["echo", "hi"], text=True).strip(),
        "terminated": sleeper.wait(),
        "os_system": os.waitstatus_to_exitcode(os.system("exit 5")),
        "fork_waitpid": os.waitstatus_to_exitcode(status),
        "yes_in_pipeline": pipeline.stdout.strip(),
    }


async def asyncio_exit_codes():
    proc = await asyncio.create_subprocess_exec("sh", "-c", "exit 4")
    shell = await asyncio.create_subprocess_shell("kill -TERM $$")
    return {"exec": await proc.wait(), "shell_killed": await shell.wait()}


def _sleep_forever():
    time.sleep(30)


def _report(queue):
    queue.put(("child", os.getpid() != os.getppid()))


def fork_children():
    """Forked children die on SIGTERM and get KeyboardInterrupt on SIGINT."""
    ctx = multiprocessing.get_context("fork")
    outcome = {}
    for name, sig in (("sigterm", signal.SIGTERM), ("sigint", signal.SIGINT)):
        child = ctx.Process(target=_sleep_forever)
        child.start()
        time.sleep(0.5)
        os.kill(child.pid, sig)
        child.join(10)
        outcome[name] = child.exitcode
    return outcome


def _report_signal_state(queue):
    masks = status_masks()
    handlers = {n: str(signal.getsignal(getattr(signal, n))) for n in ("SIGTERM", "SIGINT")}
    queue.put({"SigIgn": bits(masks["SigIgn"]), "SigBlk": bits(masks["SigBlk"]), **handlers})


def fork_child_signals():
    """What a child the app forks starts with: ignored and blocked signals, and Python's
    handlers for SIGTERM and SIGINT."""
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_report_signal_state, args=(queue,))
    child.start()
    state = queue.get(timeout=30)
    child.join(30)
    return state


def start_methods():
    result = {}
    for method in ("spawn", "forkserver", "fork"):
        ctx = multiprocessing.get_context(method)
        queue = ctx.Queue()
        child = ctx.Process(target=_report, args=(queue,))
        child.start()
        result[method] = [queue.get(timeout=30), child.join(30) or child.exitcode]
    return result


def on_usr2(signum, frame):
    usr2_hits.append(signum)


def plain_python(probes):
    """Every probe, or only the ones named on the command line (under a launcher that
    ignores SIGTERM, exit_codes would wait out its `sleep 30`)."""
    every_probe = {
        "own_signals": own_signals,
        "exec_child_signals": exec_child_signals,
        "exit_codes": exit_codes,
        "asyncio_exit_codes": lambda: asyncio.run(asyncio_exit_codes()),
        "fork_children": fork_children,
        "fork_child_signals": fork_child_signals,
        "start_methods": start_methods,
    }
    return {name: run() for name, run in every_probe.items() if not probes or name in probes}


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                signal.signal(signal.SIGUSR2, on_usr2)  # the app's own handler
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    probe = scope["path"].strip("/")
    if probe == "pid":
        result = os.getpid()
    elif probe == "usr2":
        result = len(usr2_hits)
    elif probe == "asyncio_exit_codes":
        result = await asyncio_exit_codes()
    else:
        result = globals()[probe]()
    body = json.dumps(result).encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


if __name__ == "__main__":
    json.dump(plain_python(sys.argv[1:]), sys.stdout)
