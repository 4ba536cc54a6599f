"""A pipeline under the real Airflow scheduler and triggerer: the wait task defers (holding no
worker slot) while the job runs, then succeeds."""

from __future__ import annotations

import hashlib
import json
import time
import urllib.request
from pathlib import Path

import boto3
import pytest
from support.models import paced_model_bytes

from shardflow.aws.jobstore import JobStore
from shardflow.core.record import JobStatus
from shardflow.local.demo import airflow_environment
from shardflow.local.demo_data import demo_dataset, ensure_bucket, upload_dataset
from shardflow.local.stack import AirflowStack, airflow_stack

REPO = Path(__file__).resolve().parents[2]

SPEC = """\
name: paced
start_date: 2026-01-01
schedule: null
model:
  uri: s3://sched-demo/models/paced.joblib
  sha256: {sha}
input:
  prefix: s3://sched-demo/in/dt={{{{ ds }}}}/
output:
  prefix: s3://sched-demo/out/dt={{{{ ds }}}}/
compute:
  instance_count: 2
"""


def task_states(stack: AirflowStack, token: str, run_id: str) -> dict[str, str | None]:
    """The run's task states, as the REST API reports them."""
    request = urllib.request.Request(
        f"{stack.api_url}/api/v2/dags/shardflow_paced/dagRuns/{run_id}/taskInstances",
        headers={"Authorization": f"Bearer {token}"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return {ti["task_id"]: ti["state"] for ti in json.loads(response.read())["task_instances"]}


@pytest.mark.timeout(420)
def test_the_sensor_defers_to_the_triggerer_and_the_run_succeeds(aws, s3, tmp_path):
    model = paced_model_bytes(0.8)
    ensure_bucket(s3, "sched-demo")
    s3.put_object(Bucket="sched-demo", Key="models/paced.joblib", Body=model)
    upload_dataset(s3, "s3://sched-demo/in/dt=2026-01-01/", demo_dataset((2_000, 1_500, 2_500, 1_000)))
    dags = tmp_path / "dags"
    (dags / "pipelines").mkdir(parents=True)
    (dags / "shardflow_pipelines.py").write_text((REPO / "dags" / "shardflow_pipelines.py").read_text())
    (dags / "pipelines" / "paced.yaml").write_text(SPEC.format(sha=hashlib.sha256(model).hexdigest()))
    env = airflow_environment(tmp_path / "state", aws.endpoint_url)
    env["AIRFLOW__CORE__DAGS_FOLDER"] = str(dags)
    # No quotas: the DAG's own wait task watches the job (with quotas, submit holds the pool
    # slots and watches it; tests/e2e/test_airflow_live.py covers that shape).
    env["SHARDFLOW_INSTANCE_QUOTAS"] = ""
    env["SHARDFLOW_POLL_SECONDS"] = "2"
    JobStore(boto3.client("dynamodb"), env["SHARDFLOW_JOB_TABLE"]).create_table()

    with airflow_stack(env, tmp_path / "logs") as stack:
        token = stack.token()
        deadline = time.monotonic() + 120
        while "shardflow_paced" not in stack.airflow("dags", "list", "-o", "plain"):
            assert time.monotonic() < deadline, "the dag-processor never parsed the pipeline"
            time.sleep(2)
        run_id = "manual__sched_test"
        stack.airflow("dags", "trigger", "shardflow_paced", "--run-id", run_id, "--logical-date", "2026-01-01")
        seen: list[str | None] = []
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            state = task_states(stack, token, run_id).get("wait")
            if not seen or seen[-1] != state:
                seen.append(state)
            if task_states(stack, token, run_id).get("publish") in ("success", "failed", "upstream_failed"):
                break
            time.sleep(0.2)
        final = task_states(stack, token, run_id)
        wait_logs = (
            tmp_path / "state" / "airflow" / "logs" / "dag_id=shardflow_paced" / f"run_id={run_id}" / "task_id=wait"
        )
        trigger_log = "".join(p.read_text(errors="replace") for p in wait_logs.glob("attempt=*.log.trigger.*.log"))

    assert final == {"prepare": "success", "submit": "success", "wait": "success", "publish": "success"}, final
    assert "deferred" in seen, f"the wait task never deferred: {seen}"
    (record,) = JobStore(boto3.client("dynamodb"), env["SHARDFLOW_JOB_TABLE"]).list_jobs(pipeline="paced")
    assert "Trigger fired event" in trigger_log and record.job_id in trigger_log  # polled in the triggerer
    assert record.status is JobStatus.SUCCEEDED and record.rows == 7_000
