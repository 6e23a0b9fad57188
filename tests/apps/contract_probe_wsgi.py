"""The plain-python contract probes of contract_probe.py as a WSGI app: each probe runs
on a thread of the worker's pool, as a Django or Flask view would."""

import asyncio
import json
import os
import signal

import contract_probe as probes

# A WSGI app has no lifespan: it installs its handler at import, in the main thread.
signal.signal(signal.SIGUSR2, probes.on_usr2)


def thread_masks():
    """Every thread of this process: its name and blocked signals."""
    masks = {}
    for tid in os.listdir("/proc/self/task"):
        status = probes.status_masks(f"/proc/self/task/{tid}/status")
        with open(f"/proc/self/task/{tid}/comm") as f:
            name = f.read().strip()
        masks[f"{name}-{tid}"] = probes.bits(status["SigBlk"])
    return masks


def app(environ, start_response):
    probe = environ["PATH_INFO"].strip("/")
    if probe == "pid":
        result = os.getpid()
    elif probe == "usr2":
        result = len(probes.usr2_hits)
    elif probe == "asyncio_exit_codes":
        result = asyncio.run(probes.asyncio_exit_codes())
    elif probe == "thread_masks":
        result = thread_masks()
    else:
        result = getattr(probes, probe)()
    body = json.dumps(result).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]
