"""The `ferrocorn` command: hands the command line to the Rust master."""

from __future__ import annotations

import subprocess
import sys

from ferrocorn import _ferrocorn


def serve(args: list[str]) -> int:
    # Workers are started with this same interpreter and its flags (-X dev, -O, ...).
    flags = subprocess._args_from_interpreter_flags()
    return _ferrocorn.run_master(["ferrocorn", *args], sys.executable, flags)


def main() -> None:
    sys.exit(serve(sys.argv[1:]))


if __name__ == "__main__":
    main()
