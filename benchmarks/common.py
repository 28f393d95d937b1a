"""Shared by the benchmark scripts: timing, printing, and a process's family from /proc."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def best_of(fn: Callable[[], object], repeat: int = 3) -> float:
    """The fastest of `repeat` runs, in seconds (the least disturbed by the machine)."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def command_median(args: list[str], repeat: int = 15) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(args, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def report(name: str, value: float, unit: str, target: str = "") -> None:
    print(f"{name:<58} {value:>12,.3f} {unit:<10} {target}")


def family(pid: int) -> dict[int, list[str]]:
    """A process and its children (serve's webhook port), each pid with its /proc stat fields
    after the command name (so field 1 is the parent, 11 and 12 user and system CPU ticks)."""
    found: dict[int, list[str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(entry.name) == pid or int(fields[1]) == pid:
            found[int(entry.name)] = fields
    return found
