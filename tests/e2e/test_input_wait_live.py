"""``input.wait`` under the real scheduler and triggerer: the run's first task defers while its input
is missing (holding no worker slot), the trigger polls the prefix in the triggerer, and once the
producer's marker lands the job runs and the run succeeds."""

from __future__ import annotations

import hashlib
import json
import time
import urllib.error
import urllib.request

import boto3
import pytest
import yaml

from shardflow.aws.jobstore import JobStore
from shardflow.core.record import JobStatus
from shardflow.local.demo import REPO, airflow_environment
from shardflow.local.demo_data import demo_dataset, ensure_bucket, train_demo_model, upload_dataset
from shardflow.local.stack import AirflowStack, airflow_stack

BUCKET = "shardflow-landing"
DAG = "shardflow_landing"
ROWS = (1_500, 700)


def task_states(stack: AirflowStack, token: str, run_id: str, patience: float = 120) -> dict[str, str | None]:
    """The run's task states as the REST API reports them, asking again while a loaded machine's
    API times out."""
    request = urllib.request.Request(
        f"{stack.api_url}/api/v2/dags/{DAG}/dagRuns/{run_id}/taskInstances",
        headers={"Authorization": f"Bearer {token}"},
    )
    deadline = time.monotonic() + patience
    while True:
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return {ti["task_id"]: ti["state"] for ti in json.loads(response.read())["task_instances"]}
        except (TimeoutError, urllib.error.URLError) as error:
            if isinstance(error, urllib.error.HTTPError):
                raise
            assert time.monotonic() < deadline, f"the API did not answer for {patience:.0f} s: {error}"


def until(what: str, check, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f} s waiting for {what}"
        time.sleep(0.5)


@pytest.mark.timeout(480)
def test_the_first_task_defers_until_the_marker_lands_then_the_run_succeeds(aws, s3, tmp_path):
    model = train_demo_model()
    ensure_bucket(s3, BUCKET)
    s3.put_object(Bucket=BUCKET, Key="models/demo.joblib", Body=model)
    spec = {
        "name": "landing",
        "start_date": "2026-01-01",
        "schedule": None,
        "model": {"uri": f"s3://{BUCKET}/models/demo.joblib", "sha256": hashlib.sha256(model).hexdigest()},
        "input": {
            "prefix": f"s3://{BUCKET}/in/dt={{{{ ds }}}}/",
            "wait": {"marker": "_SUCCESS", "timeout_seconds": 400},
        },
        "output": {"prefix": f"s3://{BUCKET}/out/dt={{{{ ds }}}}/"},
    }
    dags = tmp_path / "dags"
    (dags / "pipelines").mkdir(parents=True)
    (dags / "shardflow_pipelines.py").write_text((REPO / "dags" / "shardflow_pipelines.py").read_text())
    (dags / "pipelines" / "landing.yaml").write_text(yaml.safe_dump(spec))
    env = {
        **airflow_environment(tmp_path / "state", aws.endpoint_url, dags),
        "SHARDFLOW_INSTANCE_QUOTAS": "",
        "SHARDFLOW_POLL_SECONDS": "2",
    }
    JobStore(boto3.client("dynamodb"), env["SHARDFLOW_JOB_TABLE"]).create_table()
    run_id = "manual__landing"

    with airflow_stack(env, tmp_path / "logs") as stack:
        token = stack.token()
        until(
            "the dag-processor to parse the pipeline", lambda: DAG in stack.airflow("dags", "list", "-o", "plain"), 120
        )
        stack.airflow("dags", "trigger", DAG, "--run-id", run_id, "--logical-date", "2026-03-09")
        until(
            "wait_for_input to defer",
            lambda: task_states(stack, token, run_id).get("wait_for_input") == "deferred",
            180,
        )
        time.sleep(5)  # the trigger polls the empty prefix a few times
        waiting = task_states(stack, token, run_id)
        upload_dataset(s3, f"s3://{BUCKET}/in/dt=2026-03-09/", demo_dataset(ROWS), marker="_SUCCESS")
        until(
            "the run to end",
            lambda: task_states(stack, token, run_id).get("publish") in ("success", "failed", "upstream_failed"),
            240,
        )
        final = task_states(stack, token, run_id)
        logs = tmp_path / "state" / "airflow" / "logs" / f"dag_id={DAG}" / f"run_id={run_id}" / "task_id=wait_for_input"
        trigger_log = "".join(p.read_text(errors="replace") for p in logs.glob("attempt=*.log.trigger.*.log"))

    assert waiting["wait_for_input"] == "deferred" and waiting["prepare"] is None  # nothing else started
    expected = dict.fromkeys(("wait_for_input", "prepare", "submit", "wait", "publish"), "success")
    assert final == expected, final
    # Polled in the triggerer, not on a worker.
    assert f"waiting for the marker _SUCCESS under s3://{BUCKET}/in/dt=2026-03-09/" in trigger_log
    assert "Trigger fired event" in trigger_log
    (record,) = JobStore(boto3.client("dynamodb"), env["SHARDFLOW_JOB_TABLE"]).list_jobs(pipeline="landing")
    assert record.status is JobStatus.SUCCEEDED and record.rows == sum(ROWS)
