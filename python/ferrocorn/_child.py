"""`python -m ferrocorn._child FD ARGS...`: the ferrocorn master as a child of a Python
process (`ferrocorn.Server`, `ferrocorn.testing`, `ferrocorn check`).

It is `python -m ferrocorn ARGS...` plus one thing: FD is the read end of a pipe whose
write end only the parent holds. When it reaches end of file (the parent exited, even by
SIGKILL) the master sends itself SIGTERM and stops gracefully, so no server outlives the
process that started it. Workers never see FD: the master starts them with only the
listeners and their control channel.
"""

from __future__ import annotations

import os
import signal
import sys
import threading


def _watch_parent(fd: int) -> None:
    while True:
        try:
            if not os.read(fd, 64):
                break
        except InterruptedError:
            continue
        except OSError:
            break
    os.kill(os.getpid(), signal.SIGTERM)


def main() -> None:
    from ferrocorn.__main__ import serve

    fd = int(sys.argv[1])
    threading.Thread(target=_watch_parent, args=(fd,), name="ferrocorn-parent", daemon=True).start()
    sys.exit(serve(sys.argv[2:]))


if __name__ == "__main__":
    main()
