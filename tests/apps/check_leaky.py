"""An app that, at import, blocks SIGUSR1 on the main (event loop) thread, ignores
SIGHUP below Python (signal.getsignal can't tell) and leaves an inheritable pipe open."""

import ctypes
import os
import signal

from check_apps import app  # noqa: F401

signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGUSR1])
libc = ctypes.CDLL(None, use_errno=True)
libc.signal.restype = ctypes.c_void_p
libc.signal.argtypes = [ctypes.c_int, ctypes.c_void_p]
libc.signal(int(signal.SIGHUP), 1)  # SIG_IGN
read_end, write_end = os.pipe()
os.set_inheritable(write_end, True)
