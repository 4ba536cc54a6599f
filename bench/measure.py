"""Running one benchmark method as a fresh process tree and measuring it: wall time, CPU time of
the whole tree, and the peak resident memory of every process in it."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Run", "run_measured"]


@dataclass
class Run:
    """One run of one method.

    :param work_seconds: the time the method reports for its work, after its startup.
    :param peaks: the peak RSS (bytes) of each process of the tree, the first one being its root.
    """

    wall_seconds: float
    work_seconds: float
    cpu_seconds: float
    rows: int
    work_cpu_seconds: float | None = None
    peaks: list[int] = field(default_factory=list)
    tree_peak: int = 0
    log: str = ""


def _parents() -> dict[int, int]:
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    # the command name may hold spaces: the parent pid follows its closing parenthesis
                    parents[int(entry)] = int(stat.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    return parents


def _memory(pid: int) -> tuple[int, int]:
    """(peak RSS, current RSS) in bytes."""
    peak = current = 0
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    peak = int(line.split()[1]) * 1024
                elif line.startswith("VmRSS:"):
                    current = int(line.split()[1]) * 1024
    except OSError:
        pass
    return peak, current


class _Sampler(threading.Thread):
    """Polls the process tree under ``root``: each process's VmHWM, and the tree's summed RSS."""

    def __init__(self, root: int, interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.root, self.interval = root, interval
        self.peaks: dict[int, int] = {}
        self.tree_peak = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            parents = _parents()
            tree, frontier = {self.root}, [self.root]
            while frontier:
                node = frontier.pop()
                children = [pid for pid, parent in parents.items() if parent == node and pid not in tree]
                tree.update(children)
                frontier.extend(children)
            total = 0
            for pid in tree:
                peak, current = _memory(pid)
                if peak:
                    self.peaks[pid] = max(self.peaks.get(pid, 0), peak)
                total += current
            self.tree_peak = max(self.tree_peak, total)
            self.done.wait(self.interval)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_measured(command: list[str], env: dict[str, str], log_path: Path, timeout: float = 1800) -> Run:
    """Run ``command``; its last stdout line is the method's JSON result, the rest goes to ``log_path``.
    CPU time counts the processes the tree waited for (the pools all join their workers)."""
    cpu_before = _children_cpu()
    started = time.perf_counter()
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=log, text=True)
        sampler = _Sampler(process.pid)
        sampler.start()
        stdout, _ = process.communicate(timeout=timeout)
    wall = time.perf_counter() - started
    sampler.done.set()
    sampler.join()
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:3])} exited with {process.returncode}; see {log_path}")
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    result = json.loads(lines[-1]) if lines else {}
    root_peak = sampler.peaks.pop(process.pid, 0)
    return Run(
        wall_seconds=wall,
        work_seconds=float(result.get("seconds", wall)),
        cpu_seconds=_children_cpu() - cpu_before,
        rows=int(result.get("rows", 0)),
        work_cpu_seconds=result.get("cpu"),
        peaks=[root_peak, *sorted(sampler.peaks.values(), reverse=True)],
        tree_peak=sampler.tree_peak,
        log=log_path.read_text(errors="replace"),
    )
