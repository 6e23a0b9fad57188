"""Run the Autobahn fuzzingclient (wstest) against a real ferrocorn server.

Used by .ci/autobahn.sh (every case set CI checks) and tests/test_autobahn.py (a quick
subset). The server is `ferrocorn ws_echo:app` from tests/apps on 127.0.0.1; wstest is
the Python 2.7 autobahntestsuite that .ci/autobahn.sh installs.

    python tests/autobahn/run.py --wstest PATH --cases '["1.*", "2.*"]' --reports DIR
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `tests` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.server import Server  # noqa: E402

PASSING = {"OK", "NON-STRICT", "INFORMATIONAL"}
BEHAVIOURS = ["OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED"]


def case_key(case: str) -> tuple[int, ...]:
    return tuple(int(part) for part in case.split("."))


def run(wstest: str, cases: list[str], reports: Path, timeout: float = 1800) -> dict[str, str]:
    """Serve the echo app, run wstest's fuzzingclient over `cases`, and return each
    case's behaviour from the report's index.json."""
    reports = reports.resolve()
    reports.mkdir(parents=True, exist_ok=True)
    index = reports / "index.json"
    index.unlink(missing_ok=True)
    # 9.* sends messages of up to 16 MiB: room for them above the default limit.
    args = ("--ws-max-size", str(64 << 20), "--no-access-log")
    with Server("ws_echo:app", *args) as server:
        spec = {
            "outdir": str(reports),
            "servers": [{"agent": "ferrocorn", "url": f"ws://{server.host}:{server.port}/"}],
            "cases": cases,
            "exclude-cases": [],
            "exclude-agent-cases": {},
        }
        (reports / "spec.json").write_text(json.dumps(spec, indent=2))
        with open(reports / "wstest.log", "w") as log:
            done = subprocess.run(
                [wstest, "-m", "fuzzingclient", "-s", "spec.json"],
                cwd=reports,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=timeout,
            )
        if server.proc.poll() is not None:
            raise RuntimeError(f"ferrocorn exited during the run:\n{server.stderr_text()}")
    if done.returncode != 0 or not index.exists():
        log_text = (reports / "wstest.log").read_text()[-3000:]
        raise RuntimeError(f"wstest failed (exit {done.returncode}):\n{log_text}")
    results = json.loads(index.read_text())["ferrocorn"]
    return {case: results[case]["behavior"] for case in sorted(results, key=case_key)}


def summary(behaviours: dict[str, str]) -> str:
    counts = Counter(behaviours.values())
    lines = [f"{len(behaviours)} cases"]
    lines += [f"  {name:<14}{counts.get(name, 0):>5}" for name in BEHAVIOURS]
    lines += [f"  {name:<14}{n:>5}" for name, n in counts.items() if name not in BEHAVIOURS]
    groups: dict[str, Counter] = {}
    for case, behaviour in behaviours.items():
        groups.setdefault(case.split(".")[0], Counter())[behaviour] += 1
    lines.append(
        "per group: "
        + "; ".join(
            f"{g}.*: " + ", ".join(f"{n} {b}" for b, n in sorted(c.items()))
            for g, c in sorted(groups.items(), key=lambda kv: int(kv[0]))
        )
    )
    bad = [f"{case} {b}" for case, b in behaviours.items() if b not in PASSING]
    if bad:
        lines.append("not passing: " + ", ".join(bad))
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wstest", required=True)
    parser.add_argument("--cases", required=True, help='a JSON list, e.g. ["1.*", "12.1.*"]')
    parser.add_argument("--reports", default="target/autobahn", type=Path)
    parser.add_argument("--timeout", default=1800, type=float)
    opts = parser.parse_args()
    cases = json.loads(opts.cases)
    print(f"== autobahn fuzzingclient: {' '.join(cases)}", flush=True)
    started = time.monotonic()
    behaviours = run(opts.wstest, cases, opts.reports, opts.timeout)
    print(summary(behaviours))
    print(f"took {time.monotonic() - started:.0f}s; report in {opts.reports}/index.html")
    passing = bool(behaviours) and all(b in PASSING for b in behaviours.values())
    print("autobahn: PASS" if passing else "autobahn: FAIL")
    return 0 if passing else 1


if __name__ == "__main__":
    sys.exit(main())
