"""CPU time and resident memory of a server's whole process tree, from /proc.

A tree is a root pid and every descendant, found through the ppid of each process.
Also the machine's busy CPU time (/proc/stat) and this script's finished children
(the load tool), to tell the server's share of a measured run from everyone else's.
"""

from __future__ import annotations

import os
import resource
import time
from dataclasses import dataclass
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def _stat_fields(pid: int) -> list[str]:
    # The command name (field 2) may hold spaces and parentheses: split after the last ")".
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def tree_pids(root_pid: int) -> list[int]:
    """root_pid and all its descendants, found through the ppid of every process."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(_stat_fields(int(entry))[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    pids, todo = [], [root_pid]
    while todo:
        pid = todo.pop()
        pids.append(pid)
        todo.extend(children.get(pid, []))
    return pids


def start_time(pid: int) -> int | None:
    """A process's start time (stat field 22): tells a live pid from a reused one."""
    try:
        return int(_stat_fields(pid)[19])
    except (OSError, IndexError, ValueError):
        return None


def tree_cpu_seconds(root_pid: int) -> float:
    """utime + stime (all threads) summed over the process tree."""
    ticks = 0
    for pid in tree_pids(root_pid):
        try:
            fields = _stat_fields(pid)
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])  # stat fields 14 and 15
    return ticks / CLOCK_TICKS


def process_rss_mb(root_pid: int) -> list[float]:
    """The RSS of each process of the tree. The largest is the worker, the process that
    runs the app (a single-process server such as uvicorn with one worker is its own)."""
    sizes = []
    for pid in tree_pids(root_pid):
        try:
            sizes.append(int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_SIZE / 1e6)
        except (OSError, IndexError):
            continue
    return sizes


def tree_rss_mb(root_pid: int) -> float:
    return sum(process_rss_mb(root_pid))


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy (all cores), from /proc/stat."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass(frozen=True)
class CpuUse:
    """Where the CPU time went while a load ran: the server's tree, the load tool (this
    script's children that finished meanwhile), and the machine as a whole."""

    elapsed: float  # wall-clock seconds
    server: float  # CPU seconds of the server's process tree
    load: float  # CPU seconds of the load tool
    busy: float  # CPU seconds the machine was busy, everyone included

    @property
    def server_cores(self) -> float:
        return self.server / self.elapsed

    @property
    def load_cores(self) -> float:
        return self.load / self.elapsed

    @property
    def other_cores(self) -> float:
        """Whatever else kept the CPUs busy meanwhile (other processes, this script)."""
        return max(0.0, self.busy - self.server - self.load) / self.elapsed


def cpu_during(root_pid: int, work):
    """Run work() (a load tool, run as a child of this script) and return its result with
    the CpuUse of that stretch, root_pid being the server's."""
    cpu0, busy0, kids0 = (
        tree_cpu_seconds(root_pid),
        machine_busy_seconds(),
        children_cpu_seconds(),
    )
    t0 = time.monotonic()
    result = work()
    elapsed = time.monotonic() - t0
    cpu = tree_cpu_seconds(root_pid) - cpu0
    busy, load = machine_busy_seconds() - busy0, children_cpu_seconds() - kids0
    return result, CpuUse(elapsed, cpu, load, busy)
