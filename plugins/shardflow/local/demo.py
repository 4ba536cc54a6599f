"""``make demo``: one inference job end to end on the embedded default, no AWS account needed.

Starts a moto server on 127.0.0.1, creates the bucket and the job table, uploads the demo model
and a day of Parquet input, runs the demo pipeline's DAG with ``airflow dags test`` (Airflow on
SQLite under ``.shardflow/``), prints the job-status table, and stops what it started.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import boto3

from shardflow.aws.jobstore import JobStore
from shardflow.core.artifact import ModelArtifact
from shardflow.core.record import JobRecord, JobStatus
from shardflow.core.s3uri import S3Uri
from shardflow.core.status_table import format_jobs
from shardflow.local.demo_data import demo_dataset, ensure_bucket, train_demo_model, upload_dataset
from shardflow.local.moto import aws_environment, moto_server
from shardflow.spec import load_spec
from shardflow.spec.templating import render_prefix

__all__ = ["airflow_environment", "prepare_airflow", "run_airflow", "run_demo", "run_demo_pipeline"]

REPO = Path(__file__).resolve().parents[3]
DEMO_DATE = "2026-01-01"
JOB_TABLE = "shardflow-jobs"
#: The demo account's instance quota: jobs of this type hold at most 4 instances at once.
DEMO_QUOTAS = "ml.m5.xlarge=4"


def airflow_environment(state: Path, endpoint_url: str, dags_folder: Path = REPO / "dags") -> dict[str, str]:
    """Airflow 3 on SQLite with the LocalExecutor, reading ``dags_folder`` and this checkout's plugins."""
    home = state / "airflow"
    return {
        **aws_environment(endpoint_url),
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "SHARDFLOW_JOB_TABLE": JOB_TABLE,
        "SHARDFLOW_LOCAL_ROOT": str(state / "local"),
        "SHARDFLOW_INSTANCE_QUOTAS": DEMO_QUOTAS,
    }


def _step(message: str) -> None:
    print(f"==> {message}", flush=True)


def run_airflow(args: list[str], env: dict[str, str], log: Path, program: str = "airflow") -> None:
    """Run an ``airflow`` (or ``shardflow``) command of this environment, appending to ``log``."""
    command = [str(Path(sys.executable).with_name(program)), *args]
    with open(log, "ab") as out:
        result = subprocess.run(command, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
    if result.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
        raise RuntimeError(f"`{program} {' '.join(args)}` failed (exit {result.returncode}); end of {log}:\n{tail}")


def prepare_airflow(env: dict[str, str], log: Path) -> None:
    """Migrate the Airflow database ``env`` points at, and sync its instance-quota pools if any."""
    Path(env["AIRFLOW_HOME"]).mkdir(parents=True, exist_ok=True)
    _step(f"preparing Airflow's database ({env['AIRFLOW__DATABASE__SQL_ALCHEMY_CONN']})")
    run_airflow(["db", "migrate"], env, log)
    if env.get("SHARDFLOW_INSTANCE_QUOTAS"):
        _step(f"syncing the instance-quota pools ({env['SHARDFLOW_INSTANCE_QUOTAS']})")
        run_airflow(["pools", "sync"], env, log, program="shardflow")


def run_demo_pipeline(
    state: Path, endpoint_url: str, date: str = DEMO_DATE, dags_folder: Path = REPO / "dags", pipeline: str = "demo"
) -> JobRecord:
    """Seed the moto server at ``endpoint_url`` and run the demo DAG for ``date``; returns the job.

    ``dags_folder`` and ``pipeline`` pick another spec with the demo's model and inputs (tests
    run the demo on other backends that way)."""
    spec = load_spec(dags_folder / "pipelines" / f"{pipeline}.yaml")
    # The demo's AWS lives only as long as its moto server: so do its local processing jobs.
    shutil.rmtree(state / "local", ignore_errors=True)
    (state / "airflow").mkdir(parents=True, exist_ok=True)
    log = state / "demo.log"
    log.write_text("")
    env = airflow_environment(state, endpoint_url, dags_folder)
    os.environ.update({k: v for k, v in env.items() if k.startswith("AWS_")})
    s3, dynamodb = boto3.client("s3"), boto3.client("dynamodb")
    model = S3Uri.parse(ModelArtifact.of_spec(spec.model).uri)
    ensure_bucket(s3, model.bucket)
    store = JobStore(dynamodb, JOB_TABLE)
    store.create_table()
    _step(f"training the demo model and uploading it to {model}")
    s3.put_object(Bucket=model.bucket, Key=model.key, Body=train_demo_model())
    input_prefix = render_prefix(spec.input.prefix, date)
    tables = demo_dataset()
    marker = spec.input.wait.marker if spec.input.wait else None
    upload_dataset(s3, input_prefix, tables, marker=marker)
    rows = sum(t.num_rows for t in tables.values())
    then = f", then {marker}" if marker else ""
    _step(f"wrote {len(tables)} Parquet files, {rows:,} rows, to {input_prefix}{then}")
    prepare_airflow(env, log)
    tasks = ("wait_for_input -> " if spec.input.wait else "") + "prepare -> submit -> wait -> publish"
    _step(f"running DAG {spec.dag_id} for {date}: {tasks} (log: {log})")
    run_airflow(["dags", "test", spec.dag_id, date], env, log)
    return store.list_jobs(pipeline=spec.name, limit=1)[0]


def run_demo(state: Path | None = None) -> int:
    state = state or REPO / ".shardflow"
    state.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    _step("starting a moto server on 127.0.0.1")
    with moto_server(log_path=state / "moto.log") as moto:
        record = run_demo_pipeline(state, moto.endpoint_url)
        print()
        print(format_jobs([record]))
        print()
        _step(f"predictions: {record.output_prefix} (manifest: {record.output_prefix}_manifest.json)")
        _step(f"done in {time.monotonic() - started:.0f} s; stopping the moto server")
    return 0 if record.status is JobStatus.SUCCEEDED else 1
