"""Fault injection on real jobs: a moto server, the local backend's processes, real Parquet and a
real model. Each test ends by checking that every input row was predicted exactly once."""

from __future__ import annotations

import os
import signal
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from airflow.sdk.exceptions import AirflowFailException
from support.jobs import (
    ROWS,
    assert_every_row_predicted_once,
    children,
    launch,
    script_pids,
    sensor_for,
    wait_for,
    wait_until_decided,
)

from shardflow.airflow.operators import PrepareJobOperator
from shardflow.core.lifecycle import submit_job
from shardflow.core.ports import ProcessingState
from shardflow.core.record import ErrorKind, FileStatus, JobStatus
from shardflow.spec import parse_spec

DEMO = Path(__file__).resolve().parents[2] / "dags" / "pipelines" / "demo.yaml"


def test_an_instance_killed_mid_run_is_resubmitted_and_every_row_predicted_once(s3, store, bucket, local_env):
    record, tables, model = launch(s3, store, bucket)
    job_dir = local_env / record.current_processing_job
    wait_for(lambda: store.get_job(record.job_id).progress_files >= 1, what="the first file to finish")
    (pid,) = wait_for(lambda: script_pids(job_dir, "algo-2"), what="instance algo-2")
    os.kill(pid, signal.SIGKILL)

    summary = wait_until_decided(record.job_id, store)

    final = store.get_job(record.job_id)
    assert final.status is JobStatus.SUCCEEDED and final.attempt == 2
    assert summary["rows"] == sum(ROWS) and summary["files_succeeded"] == len(tables)
    assert "instance algo-2 was killed by signal 9" in (job_dir / "status.json").read_text()
    # Its forked workers die with it instead of running on as orphans.
    wait_for(lambda: not script_pids(job_dir, "algo-2"), timeout=15, what="the killed instance's workers to exit")
    assert_every_row_predicted_once(s3, bucket, tables, model)


def test_a_worker_killed_mid_file_is_replaced_within_the_attempt(s3, store, bucket, local_env):
    record, tables, model = launch(s3, store, bucket, instances=1, seconds_per_call=0.8)
    job_dir = local_env / record.current_processing_job
    (pid,) = wait_for(lambda: script_pids(job_dir, "algo-1"), what="the instance")
    workers = wait_for(lambda: children(pid), what="its workers")
    time.sleep(0.3)  # inside the first files' predictions
    os.kill(workers[0], signal.SIGKILL)

    wait_until_decided(record.job_id, store)

    final = store.get_job(record.job_id)
    assert final.status is JobStatus.SUCCEEDED and final.attempt == 1
    assert_every_row_predicted_once(s3, bucket, tables, model)


def test_an_unreadable_file_is_a_bad_input_that_fails_the_job_at_once_and_the_rest_is_kept(
    s3, store, bucket, local_env
):
    """An unreadable file fails the same way every time: it is never resubmitted, the job fails
    after its first attempt (of three) naming it, and the other files' outputs are kept."""
    record, tables, model = launch(s3, store, bucket, extra={"zz-broken.parquet": b"PAR1 this is not parquet"})

    with pytest.raises(AirflowFailException) as failure:  # fails the task for good: no Airflow retry
        wait_until_decided(record.job_id, store)

    message = str(failure.value)
    assert "FAILED after 1 of 3 attempt(s); 1 of 7 file(s) failed" in message
    assert "zz-broken.parquet:" in message
    assert "fix the inputs named above" in message
    final = store.get_job(record.job_id)
    assert final.attempt == 1 and final.files_succeeded == len(tables)
    assert len(final.processing_jobs) == 1  # never resubmitted
    files = {f.key: f for f in store.list_files(record.job_id)}
    assert files["zz-broken.parquet"].status is FileStatus.FAILED
    assert files["zz-broken.parquet"].error_kind is ErrorKind.INPUT
    assert files["zz-broken.parquet"].processing_job == final.processing_jobs[-1]
    assert_every_row_predicted_once(s3, bucket, tables, model)


def test_bad_input_a_prepare_error_fails_the_task_without_retries(s3, store, bucket, local_env):
    """An empty input prefix, or a model URI that names nothing: a task retry would meet the same,
    so the prepare task fails for good (AirflowFailException), naming what to fix."""
    spec = parse_spec(
        yaml.safe_load(DEMO.read_text())
        | {
            "model": {"uri": f"s3://{bucket}/models/nope.joblib", "sha256": "0" * 64},
            "input": {"prefix": f"s3://{bucket}/empty/dt={{{{ ds }}}}/"},
            "output": {"prefix": f"s3://{bucket}/out/dt={{{{ ds }}}}/"},
        }
    )
    prepare = PrepareJobOperator(task_id="prepare", spec=spec, job_table=store.table)
    context = {"run_id": "manual__1", "logical_date": datetime(2026, 3, 9, tzinfo=UTC)}

    with pytest.raises(AirflowFailException, match=rf"no parquet files .* under s3://{bucket}/empty/dt=2026-03-09/"):
        prepare.execute(context)

    s3.put_object(Bucket=bucket, Key="empty/dt=2026-03-09/part-0000.parquet", Body=b"PAR1")
    with pytest.raises(AirflowFailException, match=rf"model s3://{bucket}/models/nope.joblib does not exist"):
        prepare.execute(context)


def test_a_retried_task_reconnects_to_the_running_attempt(s3, store, bucket, local_env):
    record, tables, model = launch(s3, store, bucket)
    backend = sensor_for(record.job_id, store).hook.backend("local")

    again = submit_job(record.job_id, store, backend)  # the submit task's retry
    sensor_for(record.job_id, store).poke({})  # a fresh sensor try

    assert again.current_processing_job == record.current_processing_job
    assert [p.name for p in local_env.iterdir() if not p.name.startswith(".")] == [record.current_processing_job]
    wait_until_decided(record.job_id, store)
    assert store.get_job(record.job_id).attempt == 1
    assert_every_row_predicted_once(s3, bucket, tables, model)


def test_a_silent_job_is_stopped_and_resubmitted(s3, store, bucket, local_env):
    record, tables, model = launch(s3, store, bucket, instances=1, heartbeat_timeout=5)
    job_dir = local_env / record.current_processing_job
    (pid,) = wait_for(lambda: script_pids(job_dir, "algo-1"), what="the instance")
    wait_for(lambda: store.get_job(record.job_id).heartbeat_at, what="a first heartbeat")
    os.kill(pid, signal.SIGSTOP)  # a hung instance: alive, but silent

    wait_until_decided(record.job_id, store)

    final = store.get_job(record.job_id)
    assert final.status is JobStatus.SUCCEEDED and final.attempt == 2
    backend = sensor_for(record.job_id, store).hook.backend("local")
    wait_for(lambda: backend.describe(final.processing_jobs[0]).state.is_final, what="attempt 1 to end")
    assert backend.describe(final.processing_jobs[0]).state is ProcessingState.STOPPED
    assert (job_dir / "stop_requested").exists()  # stopped by the decision, not by chance
    assert_every_row_predicted_once(s3, bucket, tables, model)
