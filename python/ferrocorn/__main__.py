"""The `ferrocorn` command: hands the command line to the Rust master, or runs
`ferrocorn check` (python/ferrocorn/_check_cmd.py)."""

from __future__ import annotations

import signal
import subprocess
import sys

from ferrocorn import _ferrocorn


def set_title(title: str) -> None:
    """Name the process in ps/top when the optional setproctitle package is installed."""
    try:
        from setproctitle import setproctitle
    except ImportError:
        return
    setproctitle(title)


def _app_argument(args: list[str]) -> str:
    """APP among the arguments (for the process title): the first that is neither an
    option nor an option's value."""
    from ferrocorn._options import takes_value

    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg.startswith("-"):
            skip = takes_value(arg)
        else:
            return arg
    return ""


def serve(args: list[str]) -> int:
    # Workers are started with this same interpreter and its flags (-X dev, -O, ...).
    flags = subprocess._args_from_interpreter_flags()
    # The master owns SIGINT (quick stop). Python's own handler would otherwise leave a
    # KeyboardInterrupt pending that CPython turns into death by SIGINT on the way out.
    # An ignored SIGINT (a shell script's `cmd &`) stays ignored: the master reads it as
    # one the workers start with, as plain python would (src/master/spawn.rs).
    app = _app_argument(args)
    set_title(f"ferrocorn: master [{app}]")
    previous = signal.getsignal(signal.SIGINT)
    if previous is not signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
    try:
        return _ferrocorn.run_master(["ferrocorn", *args], sys.executable, flags)
    finally:
        signal.signal(signal.SIGINT, previous)


def main() -> None:
    args = sys.argv[1:]
    if args[:1] == ["check"]:
        from ferrocorn._check_cmd import main as check

        sys.exit(check(args[1:]))
    sys.exit(serve(args))


if __name__ == "__main__":
    main()
