"""``input.wait`` under ``airflow dags test`` (which runs a deferred task's trigger in line) against
a moto server: input that lands after the run started, input that never lands, and a prefix
without input in a pipeline that does not wait."""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
import yaml

from shardflow.aws.jobstore import JobStore
from shardflow.core.record import JobStatus
from shardflow.local.demo import REPO, airflow_environment, prepare_airflow
from shardflow.local.demo_data import demo_dataset, ensure_bucket, train_demo_model, upload_dataset

BUCKET = "shardflow-late"
DATE = "2026-03-09"
ROWS = (1_200, 800, 500)


@dataclass
class DagsTest:
    env: dict[str, str]
    state: Path

    def start(self, pipeline: str, log: Path) -> subprocess.Popen[bytes]:
        airflow = str(Path(sys.executable).with_name("airflow"))
        with open(log, "wb") as out:
            return subprocess.Popen(
                [airflow, "dags", "test", f"shardflow_{pipeline}", DATE],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=REPO,
            )

    def run(self, pipeline: str, log: Path, timeout: float = 240) -> int:
        process = self.start(pipeline, log)
        try:
            return process.wait(timeout=timeout)
        finally:
            stop(process)

    def tries(self, pipeline: str) -> dict[str, tuple[str | None, int]]:
        """Each task's final state and try number in the run."""
        with sqlite3.connect(self.state / "airflow" / "airflow.db") as db:
            rows = db.execute(
                "SELECT task_id, state, try_number FROM task_instance WHERE dag_id = ?", (f"shardflow_{pipeline}",)
            ).fetchall()
        return {task: (state, tries) for task, state, tries in rows}


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.kill()
        process.wait(timeout=30)


def spec(name: str, sha256: str, folder: str, wait: dict | None) -> dict:
    data = {
        "name": name,
        "start_date": "2026-01-01",
        "schedule": "@daily",
        "model": {"uri": f"s3://{BUCKET}/models/demo.joblib", "sha256": sha256},
        "input": {"prefix": f"s3://{BUCKET}/{folder}/dt={{{{ ds }}}}/", "format": "parquet"},
        "output": {"prefix": f"s3://{BUCKET}/predictions/{name}/dt={{{{ ds }}}}/"},
        "compute": {"instance_count": 2},
        "retries": {"max_attempts": 2, "backoff_seconds": 1},
    }
    if wait is not None:
        data["input"]["wait"] = wait
    return data


@pytest.fixture(scope="module")
def dags_test(moto, tmp_path_factory) -> DagsTest:
    state = tmp_path_factory.mktemp("late")
    dags = state / "dags"
    (dags / "pipelines").mkdir(parents=True)
    shutil.copy(REPO / "dags" / "shardflow_pipelines.py", dags)
    model = train_demo_model()
    sha256 = hashlib.sha256(model).hexdigest()
    specs = {
        "late": spec("late", sha256, "events", {"marker": "_SUCCESS", "timeout_seconds": 240}),
        "never": spec("never", sha256, "never", {"timeout_seconds": 8}),
        "nowait": spec("nowait", sha256, "empty", None),
    }
    for name, data in specs.items():
        (dags / "pipelines" / f"{name}.yaml").write_text(yaml.safe_dump(data))
    env = {
        **airflow_environment(state, moto.endpoint_url, dags),
        "SHARDFLOW_POLL_SECONDS": "2",
        "SHARDFLOW_INSTANCE_QUOTAS": "",
    }
    session = boto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1")
    s3 = session.client("s3", endpoint_url=moto.endpoint_url)
    ensure_bucket(s3, BUCKET)
    s3.put_object(Bucket=BUCKET, Key="models/demo.joblib", Body=model)
    JobStore(session.client("dynamodb", endpoint_url=moto.endpoint_url), env["SHARDFLOW_JOB_TABLE"]).create_table()
    prepare_airflow(env, state / "airflow.log")
    return DagsTest(env={**os.environ, **env}, state=state)


def wait_for_line(log: Path, words: str, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if words in log.read_text(errors="replace"):
            return
        assert process.poll() is None, f"airflow dags test ended early; its log:\n{log.read_text()[-4000:]}"
        time.sleep(0.5)
    raise AssertionError(f"no {words!r} in {log} after {timeout} s:\n{log.read_text()[-4000:]}")


@pytest.mark.timeout(420)
def test_input_that_lands_after_the_run_started_is_waited_for_and_the_job_succeeds(dags_test, aws, s3, tmp_path):
    log = tmp_path / "late.log"
    process = dags_test.start("late", log)
    try:
        # The sensor logs this just before it defers: the run has started and found nothing.
        wait_for_line(log, f"for the marker _SUCCESS under s3://{BUCKET}/events/dt={DATE}/", process, timeout=180)
        time.sleep(3)  # a poll or two of the trigger with the data still missing
        tables = demo_dataset(ROWS)
        upload_dataset(s3, f"s3://{BUCKET}/events/dt={DATE}/", tables, marker="_SUCCESS")
        code = process.wait(timeout=240)
    finally:
        stop(process)

    output = log.read_text(errors="replace")
    assert code == 0, output[-4000:]
    arrived = output.index(f"input arrived: s3://{BUCKET}/events/dt={DATE}/_SUCCESS")
    # The sensor deferred, and its trigger polled the prefix in line before the marker was there.
    assert (
        output.index("waiting until")
        < output.index(f"for the marker _SUCCESS under s3://{BUCKET}/events/dt={DATE}/ (")
        < arrived
    )
    (record,) = JobStore(boto3.client("dynamodb"), dags_test.env["SHARDFLOW_JOB_TABLE"]).list_jobs(pipeline="late")
    assert record.status is JobStatus.SUCCEEDED and record.rows == sum(ROWS)
    assert record.files_total == len(tables)
    tries = dags_test.tries("late")
    assert tries["wait_for_input"] == ("success", 1) and tries["publish"] == ("success", 1)


@pytest.mark.timeout(300)
def test_input_that_never_lands_fails_at_the_timeout_naming_the_prefix_without_retries(dags_test, aws, tmp_path):
    log = tmp_path / "never.log"
    started = time.monotonic()

    code = dags_test.run("never", log)

    output = log.read_text(errors="replace")
    assert code != 0, output[-4000:]
    assert (
        "input not ready: waited 8 s (input.wait.timeout_seconds) for a non-empty parquet file (.parquet, .parq) "
        f"under s3://{BUCKET}/never/dt={DATE}/, and it never arrived" in output
    )
    tries = dags_test.tries("never")
    assert tries["wait_for_input"] == ("failed", 1), tries  # Airflow's two retries were not spent
    assert tries["prepare"][0] == "upstream_failed"
    assert time.monotonic() - started < 120
    assert not JobStore(boto3.client("dynamodb"), dags_test.env["SHARDFLOW_JOB_TABLE"]).list_jobs(pipeline="never")


@pytest.mark.timeout(300)
def test_without_wait_an_empty_prefix_fails_prepare_at_once_without_retries(dags_test, aws, tmp_path):
    log = tmp_path / "nowait.log"

    code = dags_test.run("nowait", log)

    output = log.read_text(errors="replace")
    assert code != 0, output[-4000:]
    assert f"no parquet files (.parquet, .parq) under s3://{BUCKET}/empty/dt={DATE}/" in output
    tries = dags_test.tries("nowait")
    assert "wait_for_input" not in tries
    assert tries["prepare"] == ("failed", 1), tries  # a retry would meet the same empty prefix
    assert tries["submit"][0] == "upstream_failed"
