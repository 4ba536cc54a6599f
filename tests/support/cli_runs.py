"""Helpers for tests that run ``shardflow run`` as a real process on the local backend and then
signal or kill it: its spec, the command, its job, and every process that job has on this machine."""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import yaml

from shardflow.compute.local import pid_alive
from shardflow.local.demo_data import upload_dataset
from support.jobs import children, script_pids

__all__ = ["job_processes", "run_spec", "start_run", "started_at", "wait_dead"]


def run_spec(
    folder: Path,
    name: str,
    bucket: str,
    model: bytes,
    tables: dict[str, pa.Table],
    *,
    s3,
    instances: int = 2,
    heartbeat_timeout: int = 600,
    attempts: int = 3,
) -> Path:
    """Upload ``model`` and ``tables`` and write a spec that scores them to its own output prefix."""
    s3.put_object(Bucket=bucket, Key=f"models/{name}.joblib", Body=model)
    upload_dataset(s3, f"s3://{bucket}/{name}/in/dt=2026-03-09/", tables)
    spec = {
        "name": name,
        "owner": "tests",
        "schedule": None,
        "start_date": "2026-01-01",
        "model": {"uri": f"s3://{bucket}/models/{name}.joblib", "sha256": hashlib.sha256(model).hexdigest()},
        "input": {"prefix": f"s3://{bucket}/{name}/in/dt={{{{ ds }}}}/", "format": "parquet"},
        "output": {"prefix": f"s3://{bucket}/{name}/out/dt={{{{ ds }}}}/", "format": "parquet"},
        "compute": {"backend": "local", "instance_count": instances, "max_runtime_seconds": 600},
        "retries": {"max_attempts": attempts, "backoff_seconds": 0},
        "heartbeat_timeout_seconds": heartbeat_timeout,
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def start_run(spec: Path, table: str, log: Path, *extra: str) -> subprocess.Popen[bytes]:
    """``shardflow run SPEC --date 2026-03-09 [extra...]`` as its own process, its output in ``log``."""
    command = [sys.executable, "-m", "shardflow.cli.main", "run", str(spec), "--date", "2026-03-09", "--table", table]
    with open(log, "ab") as out:
        return subprocess.Popen(
            [*command, *extra],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )


def job_processes(job_dir: Path) -> dict[str, list[int]]:
    """The processes of one local processing job: its runner, its instances' scripts, and their
    workers (``[]`` for what is not running)."""
    try:
        runner = [int((job_dir / "runner.pid").read_text())]
    except (FileNotFoundError, ValueError):
        runner = []
    hosts = sorted(p.name for p in job_dir.glob("algo-*"))
    scripts = [pid for host in hosts for pid in script_pids(job_dir, host)]
    workers = []
    for pid in scripts:
        with contextlib.suppress(OSError):
            workers += children(pid)
    return {
        "runner": [p for p in runner if pid_alive(p)],
        "scripts": [p for p in scripts if pid_alive(p)],
        "workers": [p for p in workers if pid_alive(p)],
    }


def started_at(pid: int) -> int | None:
    """When the process started (clock ticks after boot), or ``None`` if it is gone: with its pid,
    it names one process even after the pid is reused."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def wait_dead(pids: list[int], timeout: float = 20.0) -> list[int]:
    """The pids still alive after ``timeout`` (``[]``: all gone); a pid reused by a process
    started after this call began does not count."""
    born = {pid: started_at(pid) for pid in pids}

    def alive(pid: int) -> bool:
        return pid_alive(pid) and started_at(pid) == born[pid]

    deadline = time.monotonic() + timeout
    left = [p for p in pids if born[p] is not None and alive(p)]
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = [p for p in left if alive(p)]
    return left
