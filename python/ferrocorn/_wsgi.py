"""The WSGI thread pool of a worker (src/wsgi/).

The threads are plain `threading.Thread`s, so the app sees ordinary Python threads:
the signal mask, `threading.current_thread()`, thread-locals and the hung-worker stack
dump are what they are under any threaded server. Each one runs `WsgiPool.run`, which
waits for requests with the GIL released and calls the app with it held.
"""

from __future__ import annotations

import threading
from typing import Any

# On stop, how long to wait for the threads to return (they are daemons: a request
# still hung after the graceful timeout doesn't keep the process alive).
JOIN_SECONDS = 5.0


def start_threads(pool: Any, count: int) -> list[threading.Thread]:
    threads = [
        threading.Thread(target=pool.run, args=(slot,), name=f"ferrocorn-wsgi-{slot}", daemon=True)
        for slot in range(count)
    ]
    for thread in threads:
        thread.start()
    return threads


def stop_threads(pool: Any, threads: list[threading.Thread]) -> None:
    pool.close()
    for thread in threads:
        thread.join(JOIN_SECONDS / max(len(threads), 1))
