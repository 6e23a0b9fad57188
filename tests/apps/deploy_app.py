"""An app for tests/test_deploy.py: the path picks the behaviour. It counts the
requests it is called for, so a test can tell the probes never reached it."""

import json
import os
import subprocess
import time

import app_parts

calls = {"count": 0}

MASTER_VARIABLES = (
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "LISTEN_PID",
    "LISTEN_FDS",
    "LISTEN_FDNAMES",
)


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        await app_parts.complete_lifespan(receive, send)
        return
    if scope["type"] != "http":
        return
    calls["count"] += 1
    path = scope["path"]
    if path == "/calls":
        body = json.dumps(calls["count"])
    elif path == "/pid":
        body = json.dumps(os.getpid())
    elif path == "/orphan":
        # The shell exits at once; its background sleep is orphaned and handed to the
        # namespace's init (the master, when it is PID 1).
        subprocess.run(["sh", "-c", "sleep 0.2 &"], check=True)
        body = "started"
    elif path == "/block":
        # Blocks the event loop (liveness must notice).
        seconds = float(scope["query_string"].decode().partition("=")[2] or "7")
        time.sleep(seconds)
        body = "unblocked"
    elif path == "/environment":
        # What the app and a subprocess of it see of the master's systemd state.
        child = subprocess.run(
            ["sh", "-c", "env; echo FDS=$(ls /proc/self/fd | tr '\\n' ' ')"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        body = json.dumps(
            {
                "worker": {k: os.environ[k] for k in MASTER_VARIABLES if k in os.environ},
                "child": [
                    line for line in child.splitlines() if line.split("=")[0] in MASTER_VARIABLES
                ],
                "child_fds": child.rsplit("FDS=", 1)[1].split(),
            }
        )
    elif path == "/crash":
        os._exit(7)
    else:
        body = "hello"
    data = body.encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"text/plain"),
                (b"content-length", str(len(data)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})
