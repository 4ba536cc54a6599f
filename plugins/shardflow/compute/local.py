"""The ``local`` backend: SageMaker Processing's contract, run as processes on this machine.

Each job gets a folder under ``root``; a detached runner (:mod:`shardflow.compute.local_runner`)
plays the part of the SageMaker service and keeps the job's state in ``status.json``, so any
process on this machine (the worker that submitted, the triggerer that polls) can describe or
stop it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from shardflow.compute.lifeline import OWNER_FILE
from shardflow.core.ports import ProcessingRequest, ProcessingState, ProcessingStatus
from shardflow.errors import ProcessingJobExists

__all__ = ["LocalBackend", "default_root", "default_script", "pid_alive"]


def default_root() -> Path:
    return Path(os.environ.get("SHARDFLOW_LOCAL_ROOT", Path.home() / ".shardflow" / "local"))


def default_script() -> Path:
    """The processing script: ``SHARDFLOW_PROCESSING_SCRIPT``, else the one in this checkout."""
    configured = os.environ.get("SHARDFLOW_PROCESSING_SCRIPT")
    if configured:
        return Path(configured)
    return Path(__file__).resolve().parents[3] / "processing_scripts" / "batch_predict.py"


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie has exited: only its parent has not collected it)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


class LocalBackend:
    """Runs processing jobs as local processes, one per "instance".

    :param root: where job folders live; must be the same for every Airflow component.
    :param aws_env: AWS settings for the job (credentials, region, endpoint), the way SageMaker
        hands its role's credentials to a container. Not part of :meth:`config`.
    :param script: the processing script to run.
    :param die_with_caller: each runner ends (its job FAILED, naming the owner) when the process
        that submitted it does: ``shardflow run`` sets it, so a killed command leaves nothing
        running. Airflow's submit task ends before its job, so it leaves it off; its ``on_kill``
        stops the job instead. Not part of :meth:`config`.
    """

    name = "local"

    def __init__(
        self,
        root: str | Path | None = None,
        aws_env: dict[str, str] | None = None,
        script: str | Path | None = None,
        die_with_caller: bool = False,
    ) -> None:
        self.root = Path(root) if root else default_root()
        self.aws_env = dict(aws_env or {})
        self.script = Path(script) if script else default_script()
        self.die_with_caller = die_with_caller

    def job_dir(self, job_name: str) -> Path:
        return self.root / job_name

    def submit(self, request: ProcessingRequest) -> None:
        if not self.script.is_file():
            raise FileNotFoundError(
                f"processing script {self.script} not found: set SHARDFLOW_PROCESSING_SCRIPT to its path"
            )
        job_dir = self.job_dir(request.job_name)
        if job_dir.exists():
            raise ProcessingJobExists(f"processing job {request.job_name!r} exists already in {self.root}")
        # Build the job folder aside and rename it into place: a submit that dies half-way leaves
        # no half-made job behind to block the retry.
        staging = Path(tempfile.mkdtemp(prefix=f".{request.job_name}-", dir=self._ensure_root()))
        (staging / "request.json").write_text(json.dumps(request.to_json(), indent=2))
        (staging / "script").write_text(str(self.script))
        if self.die_with_caller:
            (staging / OWNER_FILE).write_text(str(os.getpid()))
        write_status(staging, {"state": ProcessingState.IN_PROGRESS})
        try:
            os.rename(staging, job_dir)
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)
            raise ProcessingJobExists(f"processing job {request.job_name!r} exists already in {self.root}") from None
        env = {**os.environ, **self.aws_env}
        with open(job_dir / "runner.log", "ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "shardflow.compute.local_runner", str(job_dir)],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Its own process group, so a stop reaches its instances and their workers; it
                # outlives the task that submitted it, like a real job, unless die_with_caller.
                start_new_session=True,
            )
        (job_dir / "runner.pid").write_text(str(process.pid))

    def _ensure_root(self) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        return self.root

    def describe(self, job_name: str) -> ProcessingStatus | None:
        status = self._read_status(self.job_dir(job_name))
        if status is None:
            return None
        state = ProcessingState(status["state"])
        pid = self._runner_pid(self.job_dir(job_name))
        if not state.is_final and pid is not None and not pid_alive(pid):
            if (self.job_dir(job_name) / "stop_requested").exists():
                return ProcessingStatus(ProcessingState.STOPPED, "stopped on request")
            return ProcessingStatus(ProcessingState.FAILED, "the local runner process died without a result")
        if state is ProcessingState.IN_PROGRESS and (self.job_dir(job_name) / "stop_requested").exists():
            return ProcessingStatus(ProcessingState.STOPPING)
        return ProcessingStatus(state, status.get("failure_reason"))

    def stop(self, job_name: str) -> None:
        job_dir = self.job_dir(job_name)
        status = self._read_status(job_dir)
        pid = self._runner_pid(job_dir)
        if status is None or ProcessingState(status["state"]).is_final or pid is None:
            return
        # Marked first: a runner killed before it can say so itself is then known as stopped.
        (job_dir / "stop_requested").touch()
        try:
            # The runner leads its own process group: its instances and their workers go too.
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            write_status(job_dir, {**status, "state": ProcessingState.STOPPED})

    def config(self) -> dict[str, Any]:
        return {"root": str(self.root), "script": str(self.script)}

    @staticmethod
    def _runner_pid(job_dir: Path) -> int | None:
        try:
            return int((job_dir / "runner.pid").read_text())
        except (FileNotFoundError, ValueError):
            return None

    @staticmethod
    def _read_status(job_dir: Path) -> dict[str, Any] | None:
        try:
            return json.loads((job_dir / "status.json").read_text())
        except FileNotFoundError:
            return None


def write_status(job_dir: Path, status: dict[str, Any]) -> None:
    """Replace ``status.json`` atomically, so a reader never sees half a file."""
    tmp = job_dir / "status.json.tmp"
    tmp.write_text(json.dumps({k: str(v) if isinstance(v, ProcessingState) else v for k, v in status.items()}))
    os.replace(tmp, job_dir / "status.json")
