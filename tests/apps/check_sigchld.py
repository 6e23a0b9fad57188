"""An app that installs a SIGCHLD handler at import."""

import signal

from check_apps import app  # noqa: F401

seen = []


def on_child(signum, frame):
    seen.append(signum)


signal.signal(signal.SIGCHLD, on_child)
