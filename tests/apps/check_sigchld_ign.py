"""An app that ignores SIGCHLD at import: the kernel then reaps every child itself, so
the exit codes of the app's own children are lost."""

import signal

from check_apps import app  # noqa: F401

signal.signal(signal.SIGCHLD, signal.SIG_IGN)
