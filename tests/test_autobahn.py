"""A quick subset of the Autobahn WebSocket conformance suite against a real server.

The full run is .ci/autobahn.sh, which also installs wstest (Python 2.7, see
/work/shared/conformance.md); without wstest this module is skipped.
"""

import os
import shutil
from pathlib import Path

import pytest

from tests.autobahn.run import PASSING, run, summary

AUTOBAHN_HOME = Path(os.environ.get("AUTOBAHN_HOME", Path.home() / ".cache" / "ferrocorn-autobahn"))


def find_wstest() -> str | None:
    for candidate in (os.environ.get("FERROCORN_WSTEST"), AUTOBAHN_HOME / "py27/bin/wstest"):
        if candidate and os.access(candidate, os.X_OK):
            return str(candidate)
    return shutil.which("wstest")


WSTEST = find_wstest()

# Framing, pings, UTF-8, fragmentation; then permessage-deflate: small JSON messages,
# the 64 KiB image messages of issue #11, and offers of the default, an 8-bit and a
# 15-bit server window. wstest's case patterns know only "*", so the rest are listed.
GROUPS = {"1.*": 16, "2.*": 11, "5.*": 20}
SINGLE = [f"12.1.{i}" for i in range(1, 9)] + ["12.2.9"]
SINGLE += [f"13.{g}.{i}" for g in (1, 3, 4) for i in range(1, 7)]


@pytest.mark.skipif(
    WSTEST is None,
    reason="wstest not installed: run .ci/autobahn.sh --install-only "
    "(needs pyenv's Python 2.7.18), or set FERROCORN_WSTEST",
)
@pytest.mark.timeout(240)
def test_autobahn_quick_subset(tmp_path):
    behaviours = run(WSTEST, [*GROUPS, *SINGLE], tmp_path / "reports", timeout=200)
    report = summary(behaviours)
    assert len(behaviours) == sum(GROUPS.values()) + len(SINGLE), report
    assert set(SINGLE) <= set(behaviours), report
    assert all(b in PASSING for b in behaviours.values()), report
