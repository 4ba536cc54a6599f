"""Models from where they really live, end to end through ``shardflow run`` against moto: a training
job's ``model.tar.gz``, a native XGBoost model, and the newest approved package of a Model Registry
group; each job's record, manifests and Parquet outputs name the model they came from."""

from __future__ import annotations

import io
import json
import pickle
import re
from pathlib import Path

import boto3
import joblib
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from support.artifacts import Tripwire, sha, tar_gz

from shardflow.cli import main
from shardflow.contract import ENV_LOCAL_KEEP_FILES
from shardflow.core.artifact import ModelArtifact
from shardflow.core.record import JobStatus
from shardflow.local.demo_data import DEMO_FEATURES, demo_dataset, train_demo_model, upload_dataset

DATE = "2026-03-09"
ROLE = "arn:aws:iam::123456789012:role/shardflow-training"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/xgboost:1.7-1"


def native_json(model_bytes: bytes) -> bytes:
    """The demo classifier in XGBoost's own JSON format: loaded without unpickling anything."""
    return bytes(joblib.load(io.BytesIO(model_bytes)).get_booster().save_raw(raw_format="json"))


@pytest.fixture(autouse=True)
def keep_local_files(monkeypatch):
    monkeypatch.setenv(ENV_LOCAL_KEEP_FILES, "1")


@pytest.fixture
def sagemaker(aws):
    return boto3.client("sagemaker")


@pytest.fixture
def tables(s3, bucket):
    tables = demo_dataset((600, 400, 500))
    upload_dataset(s3, f"s3://{bucket}/events/dt={DATE}/", tables)
    return tables


def spec_file(folder: Path, bucket: str, model: dict) -> Path:
    spec = {
        "name": "models",
        "schedule": "@daily",
        "start_date": "2026-01-01",
        "model": model,
        "input": {"prefix": f"s3://{bucket}/events/dt={{{{ ds }}}}/", "format": "parquet"},
        "output": {"prefix": f"s3://{bucket}/scores/dt={{{{ ds }}}}/", "format": "parquet"},
        "compute": {"backend": "local", "instance_count": 2, "max_runtime_seconds": 600},
        "retries": {"max_attempts": 1, "backoff_seconds": 0},
    }
    path = folder / "models.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def run(spec: Path, store, capsys) -> tuple[int, str]:
    code = main(["run", str(spec), "--date", DATE, "--table", store.table])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def assert_lineage_everywhere(s3, bucket, store, tables, model_bytes, expected: ModelArtifact, local: Path) -> None:
    """The record, every per-instance manifest, ``_manifest.json`` and every Parquet output name
    the model; and every row is the model's prediction."""
    (record,) = store.list_jobs(pipeline="models")
    assert record.status is JobStatus.SUCCEEDED and record.model == expected
    named = expected.model_dump(exclude_none=True)
    # Publish clears the staged copies of the instances' manifests; the local runner kept its own.
    manifests = sorted(local.rglob("_manifests/*.json"))
    assert len(manifests) == 2  # one per instance
    assert all(json.loads(path.read_text())["model"] == named for path in manifests)
    prefix = f"scores/dt={DATE}/"
    assert json.loads(s3.get_object(Bucket=bucket, Key=prefix + "_manifest.json")["Body"].read())["model"] == named
    model = joblib.load(io.BytesIO(model_bytes))
    for relative, table in tables.items():
        body = s3.get_object(Bucket=bucket, Key=prefix + relative)["Body"].read()
        output = pq.ParquetFile(pa.BufferReader(body))
        metadata = {k.decode(): v.decode() for k, v in output.metadata.metadata.items()}
        assert {k: v for k, v in metadata.items() if k.startswith("shardflow:model_")} == expected.lineage()
        predictions = output.read().column("prediction").to_numpy()
        np.testing.assert_array_equal(predictions, model.predict(table.to_pandas()[DEMO_FEATURES]))


def test_a_training_jobs_archive_runs_and_names_its_training_job(
    sagemaker, s3, bucket, store, tables, local_env, tmp_path, capsys
):
    model = train_demo_model()
    archive = tar_gz({"code/inference.py": b"# not used\n", "model.joblib": model})
    sagemaker.create_training_job(
        TrainingJobName="churn-xgb-7",
        AlgorithmSpecification={"TrainingImage": IMAGE, "TrainingInputMode": "File"},
        RoleArn=ROLE,
        OutputDataConfig={"S3OutputPath": f"s3://{bucket}/training"},
        ResourceConfig={"InstanceType": "ml.m5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 10},
        StoppingCondition={"MaxRuntimeInSeconds": 3600},
    )
    uri = sagemaker.describe_training_job(TrainingJobName="churn-xgb-7")["ModelArtifacts"]["S3ModelArtifacts"]
    assert uri == f"s3://{bucket}/training/churn-xgb-7/output/model.tar.gz"
    s3.put_object(Bucket=bucket, Key=uri.removeprefix(f"s3://{bucket}/"), Body=archive)
    spec = spec_file(tmp_path, bucket, {"training_job": "churn-xgb-7", "sha256": sha(archive)})

    code, out = run(spec, store, capsys)

    assert code == 0, out
    expected = ModelArtifact(uri=uri, sha256=sha(archive), training_job="churn-xgb-7")
    assert_lineage_everywhere(s3, bucket, store, tables, model, expected, local_env)
    assert main(["jobs", "show", store.list_jobs(pipeline="models")[0].job_id, "--table", store.table]) == 0
    assert re.search(r"^lineage +training job churn-xgb-7", capsys.readouterr().out, re.M)


def test_a_native_xgboost_model_runs_without_unpickling(s3, bucket, store, tables, local_env, tmp_path, capsys):
    model = train_demo_model()
    body = native_json(model)
    s3.put_object(Bucket=bucket, Key="models/churn.json", Body=body)
    spec = spec_file(tmp_path, bucket, {"uri": f"s3://{bucket}/models/churn.json", "sha256": sha(body)})

    code, out = run(spec, store, capsys)

    assert code == 0, out
    expected = ModelArtifact(uri=f"s3://{bucket}/models/churn.json", sha256=sha(body))
    assert_lineage_everywhere(s3, bucket, store, tables, model, expected, local_env)


def register(sagemaker, group: str, url: str, status: str, sha256: str | None) -> str:
    metadata = {"CustomerMetadataProperties": {"sha256": sha256}} if sha256 is not None else {}
    return sagemaker.create_model_package(
        ModelPackageGroupName=group,
        ModelApprovalStatus=status,
        InferenceSpecification={
            "Containers": [{"Image": IMAGE, "ModelDataUrl": url}],
            "SupportedContentTypes": ["text/csv"],
            "SupportedResponseMIMETypes": ["text/csv"],
        },
        **metadata,
    )["ModelPackageArn"]


def test_the_newest_approved_registry_package_runs_and_names_its_package(
    sagemaker, s3, bucket, store, tables, local_env, tmp_path, capsys
):
    old, model = train_demo_model(rows=1_000), train_demo_model()
    archives = {name: tar_gz({"model.joblib": body}) for name, body in (("v1", old), ("v2", model))}
    for name, body in archives.items():
        s3.put_object(Bucket=bucket, Key=f"registry/{name}/model.tar.gz", Body=body)
    sagemaker.create_model_package_group(ModelPackageGroupName="churn")
    register(sagemaker, "churn", f"s3://{bucket}/registry/v1/model.tar.gz", "Approved", sha(archives["v1"]))
    approved = register(sagemaker, "churn", f"s3://{bucket}/registry/v2/model.tar.gz", "Approved", sha(archives["v2"]))
    register(sagemaker, "churn", f"s3://{bucket}/registry/v1/model.tar.gz", "PendingManualApproval", None)
    spec = spec_file(tmp_path, bucket, {"registry": {"group": "churn", "status": "Approved"}})

    code, out = run(spec, store, capsys)

    assert code == 0, out
    expected = ModelArtifact(
        uri=f"s3://{bucket}/registry/v2/model.tar.gz",
        sha256=sha(archives["v2"]),
        package_group="churn",
        package_arn=approved,
        package_version=2,
    )
    assert_lineage_everywhere(s3, bucket, store, tables, model, expected, local_env)


@pytest.mark.parametrize(
    ("recorded", "words"),
    [
        (None, "records no sha256, so its artifact s3://{bucket}/registry/model.tar.gz cannot be verified"),
        ("0" * 64, "but its model package records " + "0" * 64),
    ],
    ids=["missing-sha256", "wrong-sha256"],
)
def test_a_registry_package_without_its_true_sha256_is_refused_before_loading(
    sagemaker, s3, bucket, store, tables, local_env, tmp_path, capsys, recorded, words
):
    marker = tmp_path / "unpickled"
    archive = tar_gz({"model.joblib": pickle.dumps(Tripwire(marker), protocol=5)})
    s3.put_object(Bucket=bucket, Key="registry/model.tar.gz", Body=archive)
    sagemaker.create_model_package_group(ModelPackageGroupName="churn")
    arn = register(sagemaker, "churn", f"s3://{bucket}/registry/model.tar.gz", "Approved", recorded)
    spec = spec_file(tmp_path, bucket, {"registry": {"group": "churn"}})

    code, out = run(spec, store, capsys)

    assert code == 1
    assert words.format(bucket=bucket) in out and arn in out
    if recorded is None:
        assert f"aws sagemaker update-model-package --model-package-arn {arn}" in out
    assert store.list_jobs(pipeline="models") == []
    assert not marker.exists()
