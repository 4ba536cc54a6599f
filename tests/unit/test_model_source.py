"""A spec's model, resolved once by prepare: a URI as given, a training job's archive, or the newest
package of a Model Registry group, whose recorded sha256 is the one checked before loading."""

from __future__ import annotations

import io

import joblib
import numpy as np
import pytest
import xgboost
from support.artifacts import Tripwire, sha, tar_gz
from support.fakes import InMemoryModelCatalog

from shardflow.core.artifact import ModelArtifact
from shardflow.core.job import ModelSpec, RegistryModel
from shardflow.core.model_source import resolve_model
from shardflow.core.planning import job_id_for_run
from shardflow.core.prepare import prepare_job
from shardflow.core.s3uri import S3Uri
from shardflow.errors import JobNotFound, ModelRefused, PrepareError, ResourceError, SpecError
from shardflow.local.demo_data import DEMO_FEATURES
from shardflow.spec.pipeline import parse_spec

BUCKET = "shardflow-unit"
ARCHIVE_URI = f"s3://{BUCKET}/training/churn-7/output/model.tar.gz"


@pytest.fixture
def catalog() -> InMemoryModelCatalog:
    return InMemoryModelCatalog()


def registry(group: str = "churn", status: str = "Approved") -> ModelSpec:
    return ModelSpec(registry=RegistryModel(group=group, status=status))


def test_a_uri_is_its_own_artifact_and_needs_no_catalog():
    spec = ModelSpec(uri=f"s3://{BUCKET}/m.joblib", sha256="AB" * 32)
    assert resolve_model(spec, None) == ModelArtifact(uri=f"s3://{BUCKET}/m.joblib", sha256="ab" * 32)
    assert resolve_model(spec, None).lineage() == {
        "shardflow:model_uri": f"s3://{BUCKET}/m.joblib",
        "shardflow:model_sha256": "ab" * 32,
    }


def test_a_training_job_resolves_to_its_archive_with_the_specs_sha256(catalog):
    catalog.add_training_job("churn-7", ARCHIVE_URI)
    catalog.add_training_job("churn-8", ARCHIVE_URI.replace("7", "8"), status="InProgress")

    artifact = resolve_model(ModelSpec(training_job="churn-7", sha256="cd" * 32), catalog)

    assert artifact == ModelArtifact(uri=ARCHIVE_URI, sha256="cd" * 32, training_job="churn-7")
    assert artifact.source == "training job churn-7"
    with pytest.raises(ResourceError, match="training job churn-8 is InProgress, not Completed"):
        resolve_model(ModelSpec(training_job="churn-8", sha256="cd" * 32), catalog)


def test_a_registry_group_resolves_to_its_newest_package_with_the_status_asked_for(catalog):
    catalog.add_package("churn", f"s3://{BUCKET}/v1/model.tar.gz", "11" * 32)
    approved = catalog.add_package("churn", f"s3://{BUCKET}/v2/model.tar.gz", "22" * 32)
    catalog.add_package("churn", f"s3://{BUCKET}/v3/model.tar.gz", "33" * 32, status="PendingManualApproval")
    catalog.add_package("other", f"s3://{BUCKET}/o/model.tar.gz", "44" * 32)

    artifact = resolve_model(registry(), catalog)

    assert artifact == ModelArtifact(
        uri=f"s3://{BUCKET}/v2/model.tar.gz",
        sha256="22" * 32,
        package_group="churn",
        package_arn=approved.arn,
        package_version=2,
    )
    assert artifact.lineage()["shardflow:model_package_version"] == "2"
    assert resolve_model(registry(status="PendingManualApproval"), catalog).package_version == 3


@pytest.mark.parametrize(
    ("recorded", "words"),
    [
        (None, "records no sha256, so its artifact s3://shardflow-unit/v1/model.tar.gz cannot be verified"),
        ("not-a-hash", "its CustomerMetadataProperties sha256 'not-a-hash' is not 64 hexadecimal characters"),
    ],
    ids=["missing", "malformed"],
)
def test_a_package_without_a_usable_sha256_is_refused_saying_how_to_add_it(catalog, recorded, words):
    package = catalog.add_package("churn", f"s3://{BUCKET}/v1/model.tar.gz", recorded)
    with pytest.raises(ModelRefused) as refused:
        resolve_model(registry(), catalog)
    message = str(refused.value)
    assert words in message and package.arn in message
    if recorded is None:
        assert f"aws sagemaker update-model-package --model-package-arn {package.arn}" in message
        assert "--customer-metadata-properties sha256=HASH" in message


def test_prepare_refuses_a_package_whose_artifact_is_not_the_one_it_records_and_never_loads_it(
    object_store, job_store, job_spec, upload, tables, catalog, tmp_path
):
    marker = tmp_path / "unpickled"
    body = tar_gz({"model.joblib": pickled(Tripwire(marker))})
    object_store.put(S3Uri.parse(ARCHIVE_URI), body)
    upload(tables)
    catalog.add_package("churn", ARCHIVE_URI, "ee" * 32)
    job = job_spec().model_copy(update={"model": registry()})

    with pytest.raises(ModelRefused) as refused:
        prepare_job(job, job_store, object_store, catalog)

    assert str(refused.value).startswith(
        f"model {ARCHIVE_URI} (from model registry group churn, version 1 (arn:aws:sagemaker:"
    )
    assert f"has sha256 {sha(body)} but its model package records {'ee' * 32}" in str(refused.value)
    assert not marker.exists()
    with pytest.raises(JobNotFound):  # no record: the job never started
        job_store.get_job(job_id_for_run(job.pipeline, job.dag_id, job.run_id))


def pickled(value: object) -> bytes:
    buffer = io.BytesIO()
    joblib.dump(value, buffer)
    return buffer.getvalue()


def test_prepare_records_the_resolved_artifact_and_a_rerun_keeps_it_when_a_newer_package_arrives(
    object_store, job_store, job_spec, upload, tables, catalog, demo_model
):
    body = tar_gz({"code/inference.py": b"", "model.joblib": demo_model})
    object_store.put(S3Uri.parse(ARCHIVE_URI), body)
    upload(tables)
    first = catalog.add_package("churn", ARCHIVE_URI, sha(body))
    job = job_spec().model_copy(update={"model": registry()})

    record = prepare_job(job, job_store, object_store, catalog)
    catalog.add_package("churn", f"s3://{BUCKET}/newer/model.tar.gz", "ff" * 32)
    again = prepare_job(job, job_store, object_store, catalog)

    expected = ModelArtifact(
        uri=ARCHIVE_URI, sha256=sha(body), package_group="churn", package_arn=first.arn, package_version=1
    )
    assert record.model == again.model == job_store.get_job(record.job_id).model == expected
    assert record.files_total == len(tables)


def spec_data(model: dict) -> dict:
    return {
        "name": "churn",
        "start_date": "2026-01-01",
        "model": model,
        "input": {"prefix": f"s3://{BUCKET}/in/"},
        "output": {"prefix": f"s3://{BUCKET}/out/"},
    }


def test_a_pipeline_spec_takes_a_training_job_or_a_registry_group():
    trained = parse_spec(spec_data({"training_job": "churn-7", "sha256": "ab" * 32}), "churn.yaml")
    registered = parse_spec(spec_data({"registry": {"group": "churn"}}), "churn.yaml")
    assert trained.model == ModelSpec(training_job="churn-7", sha256="ab" * 32)
    assert registered.model.registry == RegistryModel(group="churn", status="Approved")


@pytest.mark.parametrize(
    ("model", "words"),
    [
        ({"sha256": "ab" * 32}, "model: give exactly one of model.uri"),
        (
            {"uri": f"s3://{BUCKET}/m.joblib", "training_job": "churn-7", "sha256": "ab" * 32},
            "got uri, training_job",
        ),
        ({"training_job": "churn-7"}, "model.sha256 is required with model.training_job: the sha256 of its"),
        ({"registry": {"group": "churn"}, "sha256": "ab" * 32}, "model.sha256 does not go with model.registry"),
        ({"registry": {"group": "churn", "status": "approved"}}, "model.registry.status: Input should be 'Approved'"),
        ({"training_job": "churn_7", "sha256": "ab" * 32}, "model.training_job: String should match pattern"),
    ],
    ids=["none", "two", "training-job-without-sha256", "registry-with-sha256", "status-case", "job-name"],
)
def test_a_spec_with_a_wrong_model_names_the_field_and_the_fix(model, words):
    with pytest.raises(SpecError, match=r"churn\.yaml: invalid pipeline spec") as refused:
        parse_spec(spec_data(model), "churn.yaml")
    assert words in str(refused.value)


def test_a_sagemaker_xgboost_archive_without_feature_names_asks_for_them_naming_the_training_job(
    object_store, job_store, job_spec, upload, tables, catalog
):
    rows = np.random.default_rng(5).normal(size=(200, len(DEMO_FEATURES)))
    booster = xgboost.train(
        {"objective": "binary:logistic", "nthread": 1}, xgboost.DMatrix(rows, label=rows[:, 0] > 0), 3
    )
    body = tar_gz({"xgboost-model": bytes(booster.save_raw(raw_format="ubj"))})  # as SageMaker's algorithm saves it
    object_store.put(S3Uri.parse(ARCHIVE_URI), body)
    upload(tables)
    catalog.add_training_job("churn-7", ARCHIVE_URI)
    job = job_spec().model_copy(update={"model": ModelSpec(training_job="churn-7", sha256=sha(body))})

    with pytest.raises(PrepareError, match="model of training job churn-7 does not record its feature names"):
        prepare_job(job, job_store, object_store, catalog)
    record = prepare_job(job.model_copy(update={"features": tuple(DEMO_FEATURES)}), job_store, object_store, catalog)
    assert record.model == ModelArtifact(uri=ARCHIVE_URI, sha256=sha(body), training_job="churn-7")
