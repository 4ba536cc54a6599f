"""Processes that end with their owner: a local runner with the ``shardflow run`` that started it,
and each of its instances with the runner, so that a killed owner leaves no job running.

On Linux the kernel signals the child when its parent dies (``PR_SET_PDEATHSIG``); a thread that
watches the parent's pid covers the rest, and the window before either is armed.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import threading
import time
from pathlib import Path

__all__ = ["OWNER_FILE", "bind_to_parent", "child_bound_to", "owner_gone", "parent_death_signal", "read_owner"]

#: In a local job's folder: the pid of the process the runner must not outlive, when it has one.
OWNER_FILE = "owner.pid"

_PR_SET_PDEATHSIG = 1
#: How often the watching thread looks at the parent's pid.
_WATCH_SECONDS = 0.5


def parent_death_signal(sig: int = signal.SIGTERM) -> bool:
    """Ask Linux to send ``sig`` to this process when its parent dies; ``False`` elsewhere."""
    if not sys.platform.startswith("linux"):
        return False
    with contextlib.suppress(OSError, AttributeError):
        return bool(ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, sig) == 0)
    return False


def bind_to_parent(parent: int, sig: int = signal.SIGTERM, watch: bool = True) -> None:
    """Make this process get ``sig`` once ``parent`` is no longer its parent (it died).

    Armed before the check, so a parent that died while this process started is seen too. With
    ``watch``, a daemon thread also polls the parent's pid, for systems without the Linux signal.
    """
    armed = parent_death_signal(sig)
    if os.getppid() != parent:
        os.kill(os.getpid(), sig)
        return
    if watch and not armed:
        threading.Thread(target=_watch, args=(parent, sig), name="lifeline", daemon=True).start()


def _watch(parent: int, sig: int) -> None:
    while os.getppid() == parent:
        threading.Event().wait(_WATCH_SECONDS)
    os.kill(os.getpid(), sig)


def child_bound_to(parent: int) -> None:
    """A ``preexec_fn`` for :class:`subprocess.Popen`: the child gets SIGTERM when ``parent``
    dies (async-signal-safe enough: one system call, no lock, no thread)."""
    parent_death_signal(signal.SIGTERM)
    if os.getppid() != parent:
        os._exit(1)


def read_owner(job_dir: Path) -> int | None:
    """The pid of the job's owner, or ``None`` for a job that has none (submitted by Airflow)."""
    try:
        return int((job_dir / OWNER_FILE).read_text())
    except (FileNotFoundError, ValueError):
        return None


def owner_gone(job_dir: Path, wait: float = 2.0) -> int | None:
    """The pid of the job's owner if it has one and it is no longer this process's parent.

    Waits up to ``wait`` seconds: the death signal comes when the thread that started this
    process exits, and the owner's other threads may take a moment longer to follow it.
    """
    owner = read_owner(job_dir)
    if owner is None:
        return None
    deadline = time.monotonic() + wait
    while os.getppid() == owner:
        if time.monotonic() > deadline:
            return None
        time.sleep(0.05)
    return owner
