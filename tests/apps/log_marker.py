"""A filter class a --log-config names; importing this module records which process
imported it (tests/test_logging.py: the master must never import app code)."""

import logging
import os

if os.environ.get("FERRO_IMPORT_MARKER"):
    with open(os.environ["FERRO_IMPORT_MARKER"], "a") as marker:
        marker.write(f"{os.getpid()}\n")


class Marker(logging.Filter):
    pass
