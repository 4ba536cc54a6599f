"""Nothing runs orphaned: ``shardflow run`` stopped by Ctrl-C or SIGTERM cancels its job and
leaves no process; killed by ``kill -9`` it takes its runner, instances and workers with it, and
``shardflow jobs reconcile`` settles the job it left RUNNING. Real processes, checked by PID."""

from __future__ import annotations

import json
import os
import signal

import pytest
from support.cli_runs import job_processes, run_spec, start_run, wait_dead
from support.jobs import wait_for
from support.models import paced_model_bytes

from shardflow.cli import main
from shardflow.compute.local import LocalBackend
from shardflow.core.record import JobStatus
from shardflow.local.demo_data import demo_dataset

#: Slow enough that the job is surely running when the test acts, whatever the machine.
PACE = 3.0


def running_job(store, name: str, root, timeout: float = 90):
    """The pipeline's job once it runs, with every process of its processing job up."""

    def ready():
        jobs = store.list_jobs(pipeline=name)
        if not jobs or jobs[0].status is not JobStatus.RUNNING or jobs[0].progress_files != 0:
            return None
        job_dir = LocalBackend(root).job_dir(jobs[0].current_processing_job)
        processes = job_processes(job_dir)
        return (jobs[0], job_dir, processes) if all(processes.values()) else None

    return wait_for(ready, timeout, f"job of {name} running with its processes")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_orphan_free_ctrl_c_and_sigterm_of_shardflow_run_cancel_the_job(sig, s3, bucket, store, local_env, tmp_path):
    name = f"interrupt-{sig.name.lower()}"
    spec = run_spec(tmp_path, name, bucket, paced_model_bytes(PACE), demo_dataset((400, 300, 500, 200)), s3=s3)
    log = tmp_path / "run.log"
    cli = start_run(spec, store.table, log)
    try:
        record, job_dir, processes = running_job(store, name, local_env)
        pids = [pid for group in processes.values() for pid in group]

        cli.send_signal(sig)
        code = cli.wait(timeout=60)
    finally:
        if cli.poll() is None:
            cli.kill()

    output = log.read_text()
    assert code == 128 + sig.value
    assert "Traceback" not in output and "KeyboardInterrupt" not in output
    (last,) = [line for line in output.splitlines() if line.startswith("shardflow run:")]
    assert last.startswith(f"shardflow run: interrupted by {sig.name}: job {record.job_id} stopped and CANCELLED")
    cancelled = store.get_job(record.job_id)
    assert cancelled.status is JobStatus.CANCELLED
    assert cancelled.stopped_by == f"shardflow run ({sig.name})"
    assert wait_dead(pids, timeout=5) == [], f"left running: {job_processes(job_dir)}"
    assert json.loads((job_dir / "status.json").read_text())["state"] == "Stopped"


def test_orphan_after_kill_9_of_shardflow_run_no_runner_survives_and_reconcile_settles_it(
    s3, bucket, store, local_env, tmp_path, capsys
):
    name = "killed-run"
    spec = run_spec(
        tmp_path, name, bucket, paced_model_bytes(PACE), demo_dataset((400, 300, 500, 200)), s3=s3, heartbeat_timeout=30
    )
    cli = start_run(spec, store.table, tmp_path / "run.log")
    try:
        record, job_dir, processes = running_job(store, name, local_env)
        os.kill(cli.pid, signal.SIGKILL)
        cli.wait(timeout=10)
    finally:
        if cli.poll() is None:
            cli.kill()

    # The runner, its instances and their workers end with the command: checked by PID.
    pids = [pid for group in processes.values() for pid in group]
    assert wait_dead(pids, timeout=15) == [], f"left running: {job_processes(job_dir)}"
    status = json.loads((job_dir / "status.json").read_text())
    assert status["state"] == "Failed" and f"its owner, process {cli.pid}, ended" in status["failure_reason"]

    # Left RUNNING by its dead owner; within its heartbeat timeout, reconcile leaves it be.
    assert store.get_job(record.job_id).status is JobStatus.RUNNING
    assert main(["jobs", "reconcile", "--table", store.table, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"checked": 1, "settled": []}

    wait_for(lambda: store.get_job(record.job_id).is_silent(), 45, "the heartbeat timeout")
    assert main(["jobs", "reconcile", "--table", store.table]) == 0
    settled, summary = capsys.readouterr().out.splitlines()
    assert settled == (
        f"job {record.job_id}: RUNNING -> FAILED: processing job {record.current_processing_job} Failed: "
        f"its owner, process {cli.pid}, ended without stopping it; the runner ended with it"
    )
    assert summary.startswith(f"1 active job(s) checked in table {store.table}, 1 settled")
    failed = store.get_job(record.job_id)
    assert failed.status is JobStatus.FAILED and failed.attempts[-1].status is JobStatus.FAILED
    assert store.list_jobs(status=JobStatus.RUNNING) == []
    with capsys.disabled():
        print(f"\n$ shardflow jobs reconcile\n{settled}\n{summary}")
