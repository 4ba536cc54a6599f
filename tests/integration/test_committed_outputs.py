"""Published outputs are exactly the manifest, against a real moto server and the local backend:
a rerun into a published prefix needs ``overwrite`` and then leaves nothing of the old set for
readers, and a run killed mid-job (its orphan left to finish, and a stale SageMaker job's late
upload simulated) cannot change what the next run published."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import joblib
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
import yaml
from support.models import paced_model_bytes
from support.records import IMAGE, ROLE

from shardflow.aws.s3 import S3ObjectStore
from shardflow.cli import main
from shardflow.compute.local import pid_alive
from shardflow.compute.sagemaker_request import build_create_request
from shardflow.core.job import ComputeSpec
from shardflow.core.ports import ProcessingRequest
from shardflow.core.record import JobStatus
from shardflow.core.s3uri import S3Uri
from shardflow.core.sagemaker_settings import SageMakerSpec
from shardflow.core.staging import is_visible
from shardflow.errors import ObjectExists
from shardflow.local.demo_data import DEMO_FEATURES, demo_dataset, train_demo_model, upload_dataset

REPO = Path(__file__).resolve().parents[2]
DATE = "2026-03-09"


def write_spec(folder: Path, bucket: str, model_key: str, model: bytes, **output) -> Path:
    spec = yaml.safe_load((REPO / "dags/pipelines/demo.yaml").read_text()) | {
        "name": "committed",
        "model": {"uri": f"s3://{bucket}/{model_key}", "sha256": hashlib.sha256(model).hexdigest()},
        "input": {"prefix": f"s3://{bucket}/events/dt={{{{ ds }}}}/", "format": "parquet"},
        "output": {"prefix": f"s3://{bucket}/scores/dt={{{{ ds }}}}/", "format": "parquet", **output},
    }
    path = folder / model_key.replace("/", "-") / "committed.yaml"  # a spec's file is named after it
    path.parent.mkdir(exist_ok=True)
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def published(s3, bucket: str) -> tuple[dict, dict[str, bytes]]:
    """The prefix's ``_manifest.json`` and every object a reader lists there."""
    prefix = f"scores/dt={DATE}/"
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])]
    manifest = json.loads(s3.get_object(Bucket=bucket, Key=prefix + "_manifest.json")["Body"].read())
    seen = {
        k.removeprefix(prefix): s3.get_object(Bucket=bucket, Key=k)["Body"].read()
        for k in keys
        if is_visible(k.removeprefix(prefix))
    }
    return manifest, seen


def assert_exactly_the_manifest(s3, bucket: str) -> dict:
    manifest, seen = published(s3, bucket)
    assert sorted(seen) == sorted(f["output"] for f in manifest["files"])
    assert {k: hashlib.sha256(v).hexdigest() for k, v in seen.items()} == {
        f["output"]: f["sha256"] for f in manifest["files"]
    }
    s3.head_object(Bucket=bucket, Key=f"scores/dt={DATE}/_SUCCESS")
    return manifest


def read_back(aws, bucket: str) -> pa.Table:
    """The prefix as a reader sees it: pyarrow.dataset over S3 (the moto server)."""
    fs = pafs.S3FileSystem(
        access_key=os.environ["AWS_ACCESS_KEY_ID"],
        secret_key=os.environ["AWS_SECRET_ACCESS_KEY"],
        region=os.environ["AWS_DEFAULT_REGION"],
        endpoint_override=aws.endpoint_url,
        scheme="http",
    )
    return ds.dataset(f"{bucket}/scores/dt={DATE}/", filesystem=fs, format="parquet").to_table()


def predictions(model: bytes, tables: dict[str, pa.Table]) -> dict[int, int]:
    """What ``model`` predicts for each id of the inputs."""
    loaded = joblib.load(io.BytesIO(model))
    loaded = getattr(loaded, "model", loaded)  # a PacedModel predicts as the model it wraps
    found: dict[int, int] = {}
    for table in tables.values():
        labels = loaded.predict(table.select(DEMO_FEATURES).to_pandas())
        found.update(zip(table["id"].to_pylist(), (int(v) for v in labels), strict=True))
    return found


def test_overwrite_a_rerun_after_renaming_an_input_is_refused_without_it_and_replaces_the_old_set_with_it(
    aws, s3, bucket, store, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("SHARDFLOW_LOCAL_ROOT", str(tmp_path / "local"))
    model = train_demo_model()
    s3.put_object(Bucket=bucket, Key="models/m.joblib", Body=model)
    tables = demo_dataset((700, 300, 500, 400))
    upload_dataset(s3, f"s3://{bucket}/events/dt={DATE}/", tables)
    spec = write_spec(tmp_path, bucket, "models/m.joblib", model)
    run = ["run", str(spec), "--date", DATE, "--table", store.table]
    assert main(run) == 0
    (first,) = store.list_jobs(pipeline="committed")
    before = published(s3, bucket)

    # One input renamed: the old name's output would stay beside the new one's.
    events = f"events/dt={DATE}/"
    s3.copy_object(Bucket=bucket, Key=events + "part-0004.parquet", CopySource=f"{bucket}/{events}part-0002.parquet")
    s3.delete_object(Bucket=bucket, Key=events + "part-0002.parquet")
    capsys.readouterr()

    assert main(run) == 1
    err = capsys.readouterr().err
    assert f"output prefix s3://{bucket}/scores/dt={DATE}/ holds the published outputs of job {first.job_id}" in err
    assert "set output.overwrite: true in the pipeline spec" in err and "shardflow run --overwrite" in err
    assert published(s3, bucket) == before  # nothing changed, nothing staged

    assert main([*run, "--overwrite"]) == 0

    manifest = assert_exactly_the_manifest(s3, bucket)
    second = next(j for j in store.list_jobs(pipeline="committed") if j.job_id != first.job_id)
    assert (second.status, manifest["job_id"]) == (JobStatus.SUCCEEDED, second.job_id)
    assert sorted(f["output"] for f in manifest["files"]) == [
        "late/part-0001.parquet",
        "late/part-0003.parquet",
        "part-0000.parquet",
        "part-0004.parquet",
    ]
    table = read_back(aws, bucket)
    assert table.num_rows == sum(t.num_rows for t in tables.values()) == manifest["rows"]
    assert len(set(table["id"].to_pylist())) == table.num_rows  # 1,900 ids, each once
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="scores/").get("Contents", [])]
    assert not [k for k in keys if "/_staging/" in k]  # both publishes cleared their staging


def test_orphan_killed_run_then_a_rerun_with_another_model_the_late_uploads_change_nothing_published(
    aws, s3, bucket, store, tmp_path, monkeypatch
):
    root = tmp_path / "local"
    monkeypatch.setenv("SHARDFLOW_LOCAL_ROOT", str(root))
    monkeypatch.setenv("SHARDFLOW_HEARTBEAT_SECONDS", "0.2")
    tables = demo_dataset((3_000, 2_000, 2_500, 1_500))
    upload_dataset(s3, f"s3://{bucket}/events/dt={DATE}/", tables)
    old_model, new_model = paced_model_bytes(1.5), train_demo_model(rows=1_500)
    s3.put_object(Bucket=bucket, Key="models/old.joblib", Body=old_model)
    s3.put_object(Bucket=bucket, Key="models/new.joblib", Body=new_model)
    old_labels, new_labels = predictions(old_model, tables), predictions(new_model, tables)
    assert old_labels != new_labels  # the two models disagree: the test can tell whose rows it reads

    # 1. `shardflow run` with the old (slow) model, killed -9 once its job is running.
    spec = write_spec(tmp_path, bucket, "models/old.joblib", old_model)
    cli = subprocess.Popen(
        [sys.executable, "-m", "shardflow.cli.main", "run", str(spec), "--date", DATE, "--table", store.table],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while not [j for j in store.list_jobs(pipeline="committed") if j.status is JobStatus.RUNNING]:
            assert time.monotonic() < deadline and cli.poll() is None, "the first run never got going"
            time.sleep(0.2)
    finally:
        os.kill(cli.pid, signal.SIGKILL)
        cli.wait()
    (orphaned,) = store.list_jobs(pipeline="committed")
    runner_pid = int((root / orphaned.processing_jobs[0] / "runner.pid").read_text())

    # 2. The rerun, with the new model: it publishes.
    spec = write_spec(tmp_path, bucket, "models/new.joblib", new_model)
    assert main(["run", str(spec), "--date", DATE, "--table", store.table]) == 0
    (rerun,) = [j for j in store.list_jobs(pipeline="committed") if j.job_id != orphaned.job_id]
    manifest = assert_exactly_the_manifest(s3, bucket)
    assert manifest["job_id"] == rerun.job_id
    expected = published(s3, bucket)

    # 3. The orphan's runner is let run to its end, if it still runs (it uploads where it was told).
    deadline = time.monotonic() + 180
    while pid_alive(runner_pid):
        assert time.monotonic() < deadline, f"the orphaned runner {runner_pid} is still running"
        time.sleep(0.5)

    # 4. A stale SageMaker processing job of the killed run ends now and uploads its old-model
    # predictions where its request told it to: the S3Uri of its ProcessingOutput.
    job = orphaned.job.model_copy(
        update={"compute": ComputeSpec(backend="sagemaker", sagemaker=SageMakerSpec(image_uri=IMAGE, role_arn=ROLE))}
    )
    request = ProcessingRequest.for_attempt(
        job,
        job_id=orphaned.job_id,
        job_table=store.table,
        attempt=1,
        job_name=orphaned.processing_jobs[0],
        input_keys=tuple(f"events/dt={DATE}/{key}" for key in tables),
    )
    body = build_create_request(request, job.compute.sagemaker, "us-east-1")
    upload_to = S3Uri.parse(body["ProcessingOutputConfig"]["Outputs"][0]["S3Output"]["S3Uri"])
    stale = joblib.load(io.BytesIO(old_model)).model
    for key, table in tables.items():
        labels = stale.predict(table.select(DEMO_FEATURES).to_pandas())
        out = table.select(["id"]).append_column("prediction", pa.array(labels))
        buffer = io.BytesIO()
        pq.write_table(out, buffer)
        s3.put_object(Bucket=upload_to.bucket, Key=upload_to.key + key, Body=buffer.getvalue())
    stale_manifest = {"processing_job": request.job_name, "host": "algo-1", "files": [], "failed": []}
    s3.put_object(
        Bucket=upload_to.bucket,
        Key=f"{upload_to.key}_manifests/{request.job_name}-algo-1.json",
        Body=json.dumps(stale_manifest).encode(),
    )

    # What readers see is still the rerun's, byte for byte, and every row is the new model's, once.
    assert published(s3, bucket) == expected
    assert_exactly_the_manifest(s3, bucket)
    table = read_back(aws, bucket)
    ids = table["id"].to_pylist()
    assert len(ids) == len(set(ids)) == sum(t.num_rows for t in tables.values()) == manifest["rows"]
    assert dict(zip(ids, table["prediction"].to_pylist(), strict=True)) == new_labels


def test_race_guards_on_moto_a_create_only_put_is_refused_and_a_copy_reports_its_sha256(s3, bucket):
    """What publish relies on, as the moto server does it: the claim (PutObject with
    ``If-None-Match: *``) is refused on an existing key; CopyObject returns the copy's SHA-256.
    moto 5.2 ignores ``If-None-Match`` on CopyObject (S3 honours it): docs/outputs.md says so, and
    this test fails the day moto starts refusing, so the docs can be updated."""
    objects = S3ObjectStore(s3)
    source, target = S3Uri(bucket, "staged/a.parquet"), S3Uri(bucket, "out/a.parquet")
    objects.put(source, b"new")
    objects.put(target, b"old")

    with pytest.raises(ObjectExists, match=re.escape(f"{target} exists already")):
        objects.put(target, b"claim", create_only=True)
    assert objects.copy(source, S3Uri(bucket, "out/b.parquet"), create_only=True) == hashlib.sha256(b"new").hexdigest()
    assert objects.copy(source, target, create_only=True) == hashlib.sha256(b"new").hexdigest()  # moto: not refused
    assert objects.read(target) == b"new"
    assert objects.delete_objects([target, S3Uri(bucket, "out/b.parquet"), S3Uri(bucket, "out/missing")]) == 3
    assert [o.key for o in objects.list(S3Uri(bucket, "out/"))] == []
