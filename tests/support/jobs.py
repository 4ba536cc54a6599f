"""Helpers for tests that run real jobs: launch one on the local backend with a paced model,
poke its sensor, find its processes, and check its outputs row by row."""

from __future__ import annotations

import hashlib
import io
import re
import time
from pathlib import Path

import joblib
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from shardflow.airflow.sensors import JobSensor
from shardflow.aws.s3 import S3ObjectStore, iter_objects
from shardflow.core.lifecycle import submit_job
from shardflow.core.prepare import prepare_job
from shardflow.core.s3uri import S3Uri
from shardflow.local.demo_data import DEMO_FEATURES, demo_dataset, upload_dataset
from support.models import paced_model_bytes
from support.records import sample_job_spec

ROWS = (2_000, 1_500, 2_500, 1_000, 1_800, 2_200)


def launch(
    s3,
    store,
    bucket,
    *,
    seconds_per_call=0.5,
    instances=2,
    attempts=3,
    heartbeat_timeout=600,
    extra=None,
    tables=None,
    **compute,
):
    """Upload a paced model and the dataset (``tables``, default the demo's with :data:`ROWS`),
    prepare and submit the job; return it, its tables and the model. ``compute`` goes to the
    spec (``distribution``, ``split_objects``, ``lease_seconds``)."""
    model = paced_model_bytes(seconds_per_call)
    s3.put_object(Bucket=bucket, Key="models/paced.joblib", Body=model)
    if tables is None:
        tables = demo_dataset(ROWS)
        upload_dataset(s3, f"s3://{bucket}/in/", tables)
    for key, body in (extra or {}).items():
        s3.put_object(Bucket=bucket, Key=f"in/{key}", Body=body)
    job = sample_job_spec(
        "faults-1",
        bucket,
        dag_id="shardflow_faults",
        run_id=f"manual__{time.time_ns()}",
        model_uri=f"s3://{bucket}/models/paced.joblib",
        model_sha256=hashlib.sha256(model).hexdigest(),
        input_prefix=f"s3://{bucket}/in/",
        output_prefix=f"s3://{bucket}/out/",
        instance_count=instances,
        max_runtime_seconds=600,
        max_attempts=attempts,
        backoff_seconds=0,
        heartbeat_timeout_seconds=heartbeat_timeout,
        **compute,
    )
    record = prepare_job(job, store, S3ObjectStore(s3))
    record = submit_job(record.job_id, store, sensor_for(record.job_id, store).hook.backend("local"))
    return record, tables, model


def sensor_for(job_id: str, store) -> JobSensor:
    return JobSensor(task_id="wait", job_id=job_id, backend="local", job_table=store.table, deferrable=False)


def wait_until_decided(job_id: str, store, timeout: float = 180) -> dict:
    """Poke the way a poke-mode sensor does until it succeeds (or raises)."""
    sensor = sensor_for(job_id, store)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = sensor.poke({})
        if result.is_done:
            return result.xcom_value
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} still {store.get_job(job_id).status} after {timeout} s")


def wait_for(condition, timeout: float = 60, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def script_pids(job_dir: Path, host: str) -> list[int]:
    """PIDs of the processing script of one instance (its parent process, not the workers)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        args = [a.decode(errors="replace") for a in cmdline]
        if any(a.endswith("batch_predict.py") for a in args) and str(job_dir / host) in " ".join(args):
            found.append((int(entry.name), ppid))
    pids = {pid for pid, _ in found}
    return [pid for pid, ppid in found if ppid not in pids]


def children(pid: int) -> list[int]:
    tasks = Path(f"/proc/{pid}/task")
    kids: list[int] = []
    for task in tasks.iterdir():
        text = (task / "children").read_text().split()
        kids += [int(k) for k in text]
    return kids


def assert_every_row_predicted_once(s3, bucket, tables, model_bytes, skip=()):
    """Every input row has one prediction by the model under ``out/``: published, or (a job that was
    not published) staged by its attempts under ``out/_staging/<job id>/attempt-<N>/``."""
    out = S3Uri(bucket, "out/")
    outputs = {}
    for obj in iter_objects(s3, out):
        relative = re.sub(r"^_staging/[^/]+/attempt-\d+/", "", obj.key[len(out.key) :])
        if relative.endswith(".parquet"):
            assert relative not in outputs, f"{relative} has more than one output"
            body = s3.get_object(Bucket=bucket, Key=obj.key)["Body"].read()
            outputs[relative] = pq.read_table(pa.BufferReader(body))
    assert set(outputs) == set(tables) - set(skip)
    predicted = pa.concat_tables(outputs.values())
    ids = predicted.column("id").to_numpy()
    expected = pa.concat_tables([t for k, t in tables.items() if k not in skip])
    assert sorted(ids) == sorted(expected.column("id").to_numpy())  # each row once, none missing
    model = joblib.load(io.BytesIO(model_bytes)).model
    source = expected.to_pandas().set_index("id").loc[ids]
    np.testing.assert_array_equal(predicted.column("prediction").to_numpy(), model.predict(source[DEMO_FEATURES]))
