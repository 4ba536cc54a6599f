"""Against a running Airflow (api-server, scheduler, DAG processor and triggerer on 127.0.0.1, SQLite,
the LocalExecutor) and a moto server: the trigger form's schema refuses bad values through the
REST API before a run exists and a good one runs; a backfill over three dates makes three jobs in
three folders, never more of them at once than the instance-quota pool allows, and their
published Asset starts the pipeline scheduled on it."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from support.cli_runs import job_processes, wait_dead
from support.models import paced_model_bytes

from shardflow.aws.jobstore import JobStore
from shardflow.aws.s3 import S3ObjectStore
from shardflow.compute.local import LocalBackend
from shardflow.core.orphans import ORPHAN_SETTLER, settle_orphan
from shardflow.core.record import JobStatus
from shardflow.core.s3uri import S3Uri
from shardflow.local.demo import airflow_environment, run_airflow
from shardflow.local.demo_data import demo_dataset, ensure_bucket, train_demo_model, upload_dataset
from shardflow.local.stack import airflow_stack

REPO = Path(__file__).resolve().parents[2]
BUCKET = "shardflow-live"
DATES = ("2026-02-01", "2026-02-02", "2026-02-03")
QUOTA, INSTANCES = 4, 2  # so at most two jobs run at once
TABLE = "shardflow-jobs"


@dataclass
class LiveAirflow:
    url: str
    token: str
    env: dict[str, str]
    log: Path
    model_sha256: str
    local_root: Path

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        request = urllib.request.Request(
            f"{self.url}/api/v2{path}",
            data=json.dumps(body).encode() if body is not None else None,
            method=method,
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"null")


def nightly_spec(sha256: str) -> dict[str, Any]:
    spec = yaml.safe_load((REPO / "dags" / "pipelines" / "demo.yaml").read_text())
    spec.update(name="nightly", description="Backfilled by the live test")
    spec["model"] = {"uri": f"s3://{BUCKET}/models/nightly.joblib", "sha256": sha256}
    spec["input"] = {"prefix": f"s3://{BUCKET}/events/dt={{{{ ds }}}}/", "format": "parquet"}
    spec["output"] = {"prefix": f"s3://{BUCKET}/predictions/nightly/dt={{{{ ds }}}}/", "format": "parquet"}
    spec["compute"].update(instance_count=INSTANCES)
    return spec


def rescore_spec(sha256: str) -> dict[str, Any]:
    """Runs whenever nightly publishes: an Asset-triggered run, so it has no logical date."""
    spec = nightly_spec(sha256)
    spec.update(name="rescore", schedule={"pipeline": "nightly"})
    spec["input"]["prefix"] = f"s3://{BUCKET}/events/dt={DATES[0]}/"
    spec["output"]["prefix"] = f"s3://{BUCKET}/predictions/rescore/ts={{{{ ts_nodash }}}}/"
    spec["compute"].update(instance_count=1)
    return spec


def _wait_for(what: str, check, timeout: float, log: Path) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            result = check()
        except OSError:
            result = None
        if result:
            return result
        time.sleep(1)
    tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:]) if log.exists() else ""
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; end of {log}:\n{tail}")


@pytest.fixture(scope="module")
def live(moto, tmp_path_factory) -> Iterator[LiveAirflow]:
    state = tmp_path_factory.mktemp("live")
    dags = state / "dags"
    (dags / "pipelines").mkdir(parents=True)
    for path in (REPO / "dags").glob("*.py"):
        shutil.copy(path, dags / path.name)
    model = train_demo_model()
    sha256 = hashlib.sha256(model).hexdigest()
    (dags / "pipelines" / "nightly.yaml").write_text(yaml.safe_dump(nightly_spec(sha256)))
    (dags / "pipelines" / "rescore.yaml").write_text(yaml.safe_dump(rescore_spec(sha256)))
    env = {
        **airflow_environment(state, moto.endpoint_url),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "SHARDFLOW_POLL_SECONDS": "2",
        "SHARDFLOW_JOB_TABLE": TABLE,
        "SHARDFLOW_INSTANCE_QUOTAS": f"ml.m5.xlarge={QUOTA}",
    }
    for key, value in env.items():
        if key.startswith("AWS_"):
            os.environ[key] = value
    s3 = boto3.client("s3")
    ensure_bucket(s3, BUCKET)
    s3.put_object(Bucket=BUCKET, Key="models/nightly.joblib", Body=model)
    JobStore(boto3.client("dynamodb"), TABLE).create_table()
    # The deployment's cluster policy: ad-hoc runs take their pool from the form.
    config = Path(env["AIRFLOW_HOME"]) / "config"
    config.mkdir(parents=True)
    (config / "airflow_local_settings.py").write_text(
        "from shardflow.airflow.policy import task_instance_mutation_hook\n"
    )
    with airflow_stack(env, state / "logs") as stack:
        log = state / "logs" / "cli.log"  # the CLI commands the tests run write here
        api = LiveAirflow(stack.api_url, stack.token(), stack.env, log, sha256, state / "local")
        for dag_id in ("shardflow_nightly", "shardflow_rescore", "shardflow_adhoc"):
            _wait_for(f"DAG {dag_id} to be parsed", lambda d=dag_id: api.call("GET", f"/dags/{d}")[0] == 200, 90, log)
        yield api


def adhoc_conf(sha256: str, **changes: Any) -> dict[str, Any]:
    conf = {
        "model_uri": f"s3://{BUCKET}/models/nightly.joblib",
        "model_sha256": sha256,
        "input_prefix": f"s3://{BUCKET}/events/dt=2026-02-01/",
        "output_prefix": f"s3://{BUCKET}/predictions/adhoc/",
        "instance_type": "ml.m5.xlarge",
        "instance_count": 2,
    }
    return {**conf, **changes}


def test_the_trigger_form_refuses_bad_values_before_a_run_exists(live):
    runs = "/dags/shardflow_adhoc/dagRuns"
    # Paused, the scheduler leaves the accepted run queued, where it can be deleted (a running
    # one cannot); the backfill test unpauses the DAG and runs its own.
    assert live.call("PATCH", "/dags/shardflow_adhoc", {"is_paused": True})[0] == 200
    before = live.call("GET", runs)[1]["total_entries"]
    for conf, field in (
        (adhoc_conf(live.model_sha256, instance_count=0), "instance_count"),
        (adhoc_conf(live.model_sha256, instance_count=QUOTA + 1), "instance_count"),
        (adhoc_conf(live.model_sha256, instance_count="two"), "instance_count"),
        # ml.p4d.24xlarge has no quota, so no pool: the form does not offer it.
        (adhoc_conf(live.model_sha256, instance_type="ml.p4d.24xlarge"), "instance_type"),
        (adhoc_conf(live.model_sha256, output_prefix="s3://Bad_Bucket/out/"), "output_prefix"),
        # The model may come from a URI, a training job or the registry, so a missing sha256 is the
        # spec's to refuse (at prepare); a malformed one is refused by the form.
        (adhoc_conf(live.model_sha256, model_sha256="not-a-sha256"), "model_sha256"),
    ):
        status, body = live.call("POST", runs, {"logical_date": None, "conf": conf})
        assert status == 400, (conf, body)
        assert field in json.dumps(body), body
    assert live.call("GET", runs)[1]["total_entries"] == before

    conf = adhoc_conf(live.model_sha256, output_prefix=f"s3://{BUCKET}/predictions/form-check/")
    status, body = live.call("POST", runs, {"dag_run_id": "form-check", "logical_date": None, "conf": conf})
    assert status == 200, body
    assert live.call("GET", runs)[1]["total_entries"] == before + 1
    assert live.call("DELETE", f"{runs}/form-check")[0] == 204


def test_pools_hold_the_instance_quota_and_count_deferred_tasks(live):
    status, pool = live.call("GET", "/pools/shardflow-ml.m5.xlarge")
    assert status == 200
    assert (pool["slots"], pool["include_deferred"]) == (QUOTA, True)


def test_a_backfill_over_three_dates_makes_three_jobs_in_three_folders(live):
    s3 = boto3.client("s3")
    for index, date in enumerate(DATES):
        upload_dataset(s3, f"s3://{BUCKET}/events/dt={date}/", demo_dataset((900, 400, 700), seed=index))
    conf = adhoc_conf(live.model_sha256)
    status, body = live.call(
        "POST", "/dags/shardflow_adhoc/dagRuns", {"dag_run_id": "adhoc-live", "logical_date": None, "conf": conf}
    )
    assert status == 200, body
    for dag_id in ("shardflow_nightly", "shardflow_rescore", "shardflow_adhoc"):
        run_airflow(["dags", "unpause", dag_id], live.env, live.log)
    run_airflow(
        ["backfill", "create", "--dag-id", "shardflow_nightly", "--from-date", DATES[0], "--to-date", DATES[-1]],
        live.env,
        live.log,
    )

    def backfill_runs() -> list[dict[str, Any]] | None:
        found = live.call("GET", "/dags/shardflow_nightly/dagRuns?run_type=backfill")[1]["dag_runs"]
        done = [r for r in found if r["state"] in ("success", "failed")]
        return found if len(found) == len(DATES) and len(done) == len(DATES) else None

    runs = _wait_for("three backfill runs to finish", backfill_runs, 240, live.log)
    assert {r["state"] for r in runs} == {"success"}, runs

    def adhoc_run() -> dict[str, Any] | None:
        run = live.call("GET", "/dags/shardflow_adhoc/dagRuns/adhoc-live")[1]
        return run if run["state"] in ("success", "failed") else None

    assert _wait_for("the ad-hoc run to finish", adhoc_run, 120, live.log)["state"] == "success"
    adhoc = JobStore(boto3.client("dynamodb"), TABLE).list_jobs(pipeline="adhoc", limit=10)
    (adhoc,) = [j for j in adhoc if j.job.run_id == "adhoc-live"]
    assert (adhoc.status, adhoc.output_prefix, adhoc.rows) == (
        JobStatus.SUCCEEDED,
        f"s3://{BUCKET}/predictions/adhoc/",
        2000,
    )

    jobs = JobStore(boto3.client("dynamodb"), TABLE).list_jobs(pipeline="nightly", limit=10)
    assert len(jobs) == len(DATES)
    assert {j.status for j in jobs} == {JobStatus.SUCCEEDED}
    prefixes = sorted(j.output_prefix for j in jobs)
    assert prefixes == [f"s3://{BUCKET}/predictions/nightly/dt={d}/" for d in DATES]
    for prefix in prefixes:
        uri = S3Uri.parse(prefix)
        s3.head_object(Bucket=uri.bucket, Key=uri.key + "_SUCCESS")
        assert sum(j.rows for j in jobs if j.output_prefix == prefix) == 2000

    # nightly's publish updated its Asset, which started rescore: no logical date, so the run's
    # prefixes take the time it was queued.
    def rescored() -> list[dict[str, Any]] | None:
        found = live.call("GET", "/dags/shardflow_rescore/dagRuns")[1]["dag_runs"]
        return [r for r in found if r["state"] == "success"] or None

    (first, *_) = _wait_for("nightly's Asset to trigger rescore", rescored, 120, live.log)
    assert first["run_type"] == "asset_triggered"
    rescore_jobs = JobStore(boto3.client("dynamodb"), TABLE).list_jobs(pipeline="rescore", limit=10)
    (job,) = [j for j in rescore_jobs if j.job.run_id == first["dag_run_id"]]
    assert job.status is JobStatus.SUCCEEDED
    assert re.fullmatch(rf"s3://{BUCKET}/predictions/rescore/ts=\d{{8}}T\d{{6}}/", job.output_prefix)

    # The ad-hoc run's tasks took their pool from its form, through the cluster policy.
    for task_id in ("submit", "wait"):
        ti = live.call("GET", f"/dags/shardflow_adhoc/dagRuns/adhoc-live/taskInstances/{task_id}")[1]
        assert (ti["pool"], ti["pool_slots"]) == ("shardflow-ml.m5.xlarge", 2), ti

    # Every job here is ml.m5.xlarge. Each local processing job lives from its request to its
    # final status: those alive at any moment never hold more instances than the quota.
    spans = []
    for job_dir in live.local_root.iterdir():
        request = job_dir / "request.json"
        if request.is_file() and (job_dir / "status.json").is_file():
            final = json.loads((job_dir / "status.json").read_text())["state"] != "InProgress"
            end = (job_dir / "status.json").stat().st_mtime if final else time.time()
            spans.append(
                (request.stat().st_mtime, end, json.loads(request.read_text())["instance_count"], job_dir.name)
            )
    assert len(spans) >= len(DATES) + 2  # the backfill, the ad-hoc run and at least one rescore
    in_use = max(sum(n for s, e, n, _ in spans if s <= moment < e) for moment, _, _, _ in spans)
    assert in_use <= QUOTA, sorted(spans)


def test_orphan_free_pool_a_killed_submit_task_stops_its_job_with_it(live):
    """Marking the pooled submit task failed while it waits (deferred) stops its processing job
    through the trigger's ``on_kill``: the slots come back only as the job's processes end, and
    the job left RUNNING is settled CANCELLED by the next reader once its heartbeat timeout passed."""
    s3 = boto3.client("s3")
    model = paced_model_bytes(4.0)
    s3.put_object(Bucket=BUCKET, Key="models/paced.joblib", Body=model)
    upload_dataset(s3, f"s3://{BUCKET}/events/slow/", demo_dataset((500,) * 6, seed=7))
    conf = adhoc_conf(
        hashlib.sha256(model).hexdigest(),
        model_uri=f"s3://{BUCKET}/models/paced.joblib",
        input_prefix=f"s3://{BUCKET}/events/slow/",
        output_prefix=f"s3://{BUCKET}/predictions/killed-submit/",
    )
    run = "/dags/shardflow_adhoc/dagRuns/killed-submit"
    status, body = live.call(
        "POST", "/dags/shardflow_adhoc/dagRuns", {"dag_run_id": "killed-submit", "logical_date": None, "conf": conf}
    )
    assert status == 200, body
    run_airflow(["dags", "unpause", "shardflow_adhoc"], live.env, live.log)
    store = JobStore(boto3.client("dynamodb"), TABLE)

    def running() -> tuple[Any, Path, dict[str, list[int]]] | None:
        ti = live.call("GET", f"{run}/taskInstances/submit")[1]
        jobs = [j for j in store.list_jobs(pipeline="adhoc", limit=20) if j.job.run_id == "killed-submit"]
        if ti.get("state") != "deferred" or not jobs or jobs[0].status is not JobStatus.RUNNING:
            return None
        job_dir = live.local_root / str(jobs[0].current_processing_job)
        processes = job_processes(job_dir)
        return (jobs[0], job_dir, processes) if all(processes.values()) else None

    record, job_dir, processes = _wait_for("the ad-hoc job to run, its submit task deferred", running, 120, live.log)
    pool = live.call("GET", "/pools/shardflow-ml.m5.xlarge")[1]
    assert pool["deferred_slots"] >= 2, pool  # the deferred submit task holds the job's two instances

    status, body = live.call("PATCH", f"{run}/taskInstances/submit", {"new_state": "failed"})
    assert status == 200, body
    killed = time.monotonic()
    pids = [pid for group in processes.values() for pid in group]
    assert wait_dead(pids, timeout=60) == [], f"the job outlived its submit task: {job_processes(job_dir)}"
    stopped_after = time.monotonic() - killed
    assert json.loads((job_dir / "status.json").read_text())["state"] == "Stopped"

    def slots_free() -> bool:
        pool = live.call("GET", "/pools/shardflow-ml.m5.xlarge")[1]
        return pool["deferred_slots"] == 0 and pool["running_slots"] == 0

    _wait_for("the pool's slots to come back", slots_free, 60, live.log)
    assert stopped_after < 30, stopped_after  # stopped within a trigger's poll, not at its timeout
    print(f"killed submit task: its job's processes ended {stopped_after:.1f} s after the task was marked failed")

    # Nobody waits for the job any more: the next reader settles it once its timeout has passed.
    later = datetime.now(UTC) + timedelta(seconds=record.job.heartbeat_timeout_seconds + 1)
    objects = S3ObjectStore(s3)
    assert settle_orphan(record.job_id, store, LocalBackend(live.local_root), objects).status is JobStatus.RUNNING
    settled = settle_orphan(record.job_id, store, LocalBackend(live.local_root), objects, now=later)
    assert (settled.status, settled.stopped_by) == (JobStatus.CANCELLED, ORPHAN_SETTLER)
    assert "was stopped (stopped on request)" in (settled.error or "")
