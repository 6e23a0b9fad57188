"""The report of a run: the environment header (machine, versions, git revision, load
settings), the markdown table of medians with ratios against the baseline, the table
of issue 4's targets, and the problems (failures, errors, a noisy machine) to repeat
loudly on stderr.
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
from pathlib import Path

from load import H2LOAD_STREAMS
from servers import BASELINE, FERROCORN_PYTHON, HOST, PEERS_BIN, ROOT, serves

PEER_DISTS = (
    "granian", "uvicorn", "gunicorn", "uvicorn-worker", "fastapi", "starlette", "pydantic",
    "uvloop", "httptools",
)  # fmt: skip
FERROCORN_DISTS = ("ferrocorn", "fastapi", "starlette", "pydantic", "uvloop")


def dist_versions(python: str, dists: tuple[str, ...]) -> str:
    code = (
        "import importlib.metadata as m, platform, sys\n"
        "def v(n):\n"
        "    try: return m.version(n)\n"
        "    except m.PackageNotFoundError: pass\n"
        "    try: return __import__(n).__version__ + ' (checkout)'\n"  # BENCH_PYTHON's .pth
        "    except Exception: return 'missing'\n"
        f"print(', '.join(f'{{n}} {{v(n)}}' for n in {dists!r}) + "
        "', Python ' + platform.python_version())"
    )
    try:
        out = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=30)
    except OSError as exc:
        return f"unavailable ({exc})"
    return out.stdout.strip() or f"unavailable ({out.stderr.strip()[-200:]})"


def git_revision() -> str:
    try:
        rev = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return "?"
    return f"{rev or '?'}{' + uncommitted changes' if dirty else ''}"


def machine() -> str:
    model = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    nproc = len(os.sched_getaffinity(0))
    mem = Path("/proc/meminfo").read_text().split("\n", 1)[0].split()[1]
    return (
        f"nproc {nproc}, {model}, {int(mem) / 2**20:.0f} GiB RAM, "
        f"kernel {platform.system()} {platform.release()}"
    )


def wrk_version() -> str:
    out = subprocess.run(["wrk", "-v"], capture_output=True, text=True)
    return (out.stdout or out.stderr).split("\n", 1)[0].split(" Copyright")[0].strip()


def fmt_ratio(value: float | None, base: float | None) -> str:
    if value is None or not base:
        return "-"
    return f"{value / base:.2f}x"


# Issue 4's targets for ferrocorn against granian: (workload, ratio that must hold).
RPS_TARGETS = {"hello": 1.5, "fastapi": 1.2, "echo": 1.5, "stream": 1.0}
CPU_TARGET = 0.7  # CPU per request, at most this fraction of granian's
SCALING_TARGET = 1.6  # hello2w req/s / hello req/s


def target_lines(med) -> list[str]:
    """One table row per issue 4 target that this run measured: the figure and met or not.
    med(workload, server, key) is the median over the rounds, or None when not measured."""
    rows = []

    def row(what: str, figure: str, met: bool) -> None:
        rows.append(f"| {what} | {figure} | {'met' if met else 'NOT MET'} |")

    for workload, target in RPS_TARGETS.items():
        ours, theirs = med(workload, "ferrocorn", "rps"), med(workload, BASELINE, "rps")
        if ours and theirs:
            row(f"{workload} req/s >= {target}x {BASELINE}", f"{ours / theirs:.2f}x",
                ours >= target * theirs)  # fmt: skip
    for workload in RPS_TARGETS:
        ours, theirs = med(workload, "ferrocorn", "p99_ms"), med(workload, BASELINE, "p99_ms")
        if ours and theirs:
            row(f"{workload} p99 <= {BASELINE}'s", f"{ours:.2f} vs {theirs:.2f} ms",
                ours <= theirs)  # fmt: skip
    for workload in RPS_TARGETS:
        ours = med(workload, "ferrocorn", "cpu_us_per_req")
        theirs = med(workload, BASELINE, "cpu_us_per_req")
        if ours and theirs:
            row(f"{workload} CPU/request <= {CPU_TARGET}x {BASELINE}'s",
                f"{ours / theirs:.2f}x", ours <= CPU_TARGET * theirs)  # fmt: skip
    ours, theirs = (
        med("fastapi", "ferrocorn", "worker_rss_mb"),
        med("fastapi", "uvicorn", "worker_rss_mb"),
    )
    if ours and theirs:
        row("idle worker RSS with FastAPI <= uvicorn's", f"{ours:.1f} vs {theirs:.1f} MB",
            ours <= theirs)  # fmt: skip
    one, two = med("hello", "ferrocorn", "rps"), med("hello2w", "ferrocorn", "rps")
    if one and two:
        row(f"2 workers vs 1 on hello >= {SCALING_TARGET}x", f"{two / one:.2f}x",
            two >= SCALING_TARGET * one)  # fmt: skip
        g1, g2 = med("hello", BASELINE, "rps"), med("hello2w", BASELINE, "rps")
        if g1 and g2:
            rows.append(f"| (same for {BASELINE}, for reference) | {g2 / g1:.2f}x | |")
    if not rows:
        return []
    return ["| target | this run | |", "|---|---:|---|"] + rows


def round_ratio_lines(workloads, results) -> list[str]:
    """ferrocorn's req/s over the baseline's, round by round. The two runs of a round are
    seconds apart, so they share the machine's state of the moment (on a shared VM its
    speed drifts by 20% over minutes, for every server alike): the spread of these pairs
    shows how far a single run can be trusted, which the medians of the table hide."""
    rows = []
    for workload in workloads:
        ours = results.get((workload, "ferrocorn"), [])
        theirs = results.get((workload, BASELINE), [])
        ratios = [
            a.data["rps"] / b.data["rps"]
            for a, b in zip(ours, theirs, strict=False)  # one run each per round
            if a.ok and b.ok and b.data["rps"]
        ]
        if len(ratios) < 2:
            continue
        row = ", ".join(f"{r:.2f}x" for r in ratios)
        row += f" (median {statistics.median(ratios):.2f}x"
        if workload in RPS_TARGETS:
            met = sum(r >= RPS_TARGETS[workload] for r in ratios)
            row += f"; {met} of {len(ratios)} rounds at or above {RPS_TARGETS[workload]}x"
        rows.append(f"- {workload}: {row})")
    if not rows:
        return []
    return ["", f"req/s of ferrocorn / {BASELINE}, round by round:", ""] + rows


def build_report(args, servers, workloads, results, started) -> tuple[str, list[str]]:
    """The markdown report, and the loud problems (errors, failures) to repeat on stderr."""
    problems: list[str] = []

    def med(workload: str, server: str, key: str) -> float | None:
        runs = [r for r in results.get((workload, server), []) if r.ok]
        return statistics.median(r.data[key] for r in runs) if runs else None

    lines = [
        f"# ferrocorn benchmark, {started:%Y-%m-%d %H:%M}",
        "",
        f"- Machine: {machine()}",
        f"- ferrocorn: {dist_versions(FERROCORN_PYTHON, FERROCORN_DISTS)} "
        f"({FERROCORN_PYTHON}, git {git_revision()})",
        f"- Peers: {dist_versions(str(PEERS_BIN / 'python'), PEER_DISTS)} ({PEERS_BIN.parent})",
        f"- Load: {wrk_version()}, `wrk -t{args.threads} -c{args.connections} --latency` "
        f"on {HOST}; h2hello: `h2load -c{args.connections} -m{H2LOAD_STREAMS}` (h2c by "
        f"prior knowledge); wsecho: bench/tools wsload, {args.connections} connections; "
        f"{args.warmup} s warm-up + {args.duration} s measured per run, "
        f"median of {args.rounds} interleaved round(s), one worker per server (two in hello2w)",
        "",
        "| workload | server | req/s | p99 ms | CPU µs/req | idle RSS MB | idle worker MB "
        f"| loaded RSS MB | req/s vs {BASELINE} | CPU vs {BASELINE} |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for workload in workloads:
        base_rps, base_cpu = (
            med(workload, BASELINE, "rps"),
            med(workload, BASELINE, "cpu_us_per_req"),
        )
        for server in servers:
            if not serves(server, workload):
                lines.append(f"| {workload} | {server} | n/a | | | | | | | |")
                continue
            runs = results.get((workload, server), [])
            good = [r for r in runs if r.ok]
            errors = sum(r.errors for r in runs)
            label = server
            if len(good) < len(runs):
                label += f" **FAILED {len(runs) - len(good)}/{len(runs)}**"
            if errors:
                label += f" **{errors} ERRORS**"
            for i, r in enumerate(runs, 1):
                if not r.ok:
                    problems.append(f"{workload}/{server} round {i} FAILED: {r.reason}")
                elif r.data.get("warmup_errors"):
                    problems.append(
                        f"{workload}/{server} round {i}: {r.data['warmup_errors']} errors "
                        "during the warm-up (not in the measured run)"
                    )
                if r.ok and r.errors:
                    problems.append(
                        f"{workload}/{server} round {i}: {r.errors} ERRORS "
                        f"({r.data['non2xx']} non-2xx; {r.data['sock_detail']})"
                    )
            if not good:
                lines.append(f"| {workload} | {label} | FAILED | - | - | - | - | - | - | - |")
                continue
            rps, cpu = med(workload, server, "rps"), med(workload, server, "cpu_us_per_req")
            p99 = med(workload, server, "p99_ms") if good[0].data["p99_ms"] is not None else None
            p99_text = f"{p99:.2f}" if p99 is not None else "-"
            lines.append(
                f"| {workload} | {label} | {rps:.0f} | {p99_text} "
                f"| {cpu:.1f} | {med(workload, server, 'rss_mb'):.1f} "
                f"| {med(workload, server, 'worker_rss_mb'):.1f} "
                f"| {med(workload, server, 'loaded_rss_mb'):.1f} "
                f"| {fmt_ratio(rps, base_rps)} | {fmt_ratio(cpu, base_cpu)} |"
            )
    all_runs = [r for rs in results.values() for r in rs if r.ok]
    lines.append("")
    if all_runs:
        other = max(r.data["other_cores"] for r in all_runs)
        wrk = statistics.median(r.data["wrk_cores"] for r in all_runs)
        lines.append(
            f"CPU µs/req: user+system time of the server's process tree / requests (or "
            f"WebSocket round trips) served. Idle RSS: the server's process tree after boot; "
            f"idle worker: its largest process, the one running the app (for a "
            f"single-process server, the whole server). Loaded RSS: the process tree right "
            f"after the measured run. The load tool used a median {wrk:.2f} core(s); other "
            f"processes at most {other:.2f} core(s) during a measured run. h2load reports "
            "no percentiles: p99 is '-' for h2hello. ceiling: a plain hyper server with no "
            "Python (bench/tools), the upper bound for hello and h2hello."
        )
        if other > 0.15:
            problems.append(
                f"NOISY MACHINE: other processes used up to {other:.2f} core(s) during "
                "measured runs; req/s and p99 are not trustworthy (CPU µs/req less affected)"
            )
    if BASELINE not in servers:
        lines.append(f"Ratios need {BASELINE} in --servers.")
    lines += round_ratio_lines(workloads, results)
    targets = target_lines(med)
    if targets:
        lines += ["", "### Issue 4 targets", ""] + targets
    if problems:
        lines += ["", "## Problems", ""] + [f"- {p}" for p in problems]
    return "\n".join(lines), problems
