"""The processing script's command line: what a backend derives from a job parses back, in the
script, to the very same options."""

import os
from dataclasses import replace

import pytest
from support.records import sample_job_spec

from shardflow.core.artifact import ModelArtifact
from shardflow.core.invocation import ScriptOptions, container_model_path


@pytest.mark.parametrize(
    ("settings", "more"),
    [
        ({}, {"workers": 4}),
        (
            {"features": ["f0", "f1", "f7"], "passthrough": ["id", "region"], "probability": "per_class"},
            {"workers": 16, "batch_rows": 8192},
        ),
        ({"passthrough": [], "input_format": "csv.gz", "output_format": "csv"}, {"workers": 1}),
        ({"backend": "sagemaker", "passthrough": ["id"]}, {}),
    ],
    ids=["defaults", "columns-and-per-class", "empty-passthrough", "workers-left-to-the-script"],
)
def test_the_command_line_of_a_job_parses_back_to_the_same_options(settings, more):
    job = sample_job_spec(**settings)
    options = ScriptOptions.for_job(
        job,
        input_dir="/opt/ml/processing/input/data",
        output_dir="/opt/ml/processing/output",
        model_path=container_model_path(ModelArtifact.of_spec(job.model)),
        **more,
    )

    parsed = ScriptOptions.parse(options.to_argv())

    expected = options if "workers" in more else replace(options, workers=os.cpu_count() or 1)
    assert parsed == expected
    assert parsed.model_sha256 == job.model.sha256
    assert parsed.passthrough == (tuple(job.passthrough) if job.passthrough is not None else None)
    assert parsed.probability_per_class is (job.output.probability == "per_class")


def test_an_empty_passthrough_copies_no_column_and_is_not_the_default_of_all():
    job = sample_job_spec(passthrough=[])
    argv = ScriptOptions.for_job(job, input_dir="in", output_dir="out", model_path="m.joblib").to_argv()
    assert argv[argv.index("--passthrough") + 1] == ""
    assert ScriptOptions.parse(argv).passthrough == ()
    default = ScriptOptions.for_job(sample_job_spec(), input_dir="in", output_dir="out", model_path="m.joblib")
    assert "--passthrough" not in default.to_argv() and ScriptOptions.parse(default.to_argv()).passthrough is None


def test_a_column_name_with_a_comma_survives_the_command_line_or_is_refused():
    try:
        job = sample_job_spec(passthrough=["id", "city,state"])
    except ValueError as refused:  # refused when the job is described, before anything runs
        assert "city,state" in str(refused)
        return
    options = ScriptOptions.for_job(job, input_dir="in", output_dir="out", model_path="m.joblib", workers=2)
    assert ScriptOptions.parse(options.to_argv()).passthrough == ("id", "city,state")


@pytest.mark.parametrize(
    "lineage",
    [
        {"training_job": "churn-xgb-2026-03-01"},
        {
            "package_group": "churn",
            "package_arn": "arn:aws:sagemaker:us-east-1:123456789012:model-package/churn/7",
            "package_version": 7,
        },
    ],
    ids=["training-job", "registry"],
)
def test_a_resolved_models_archive_and_lineage_reach_the_script(lineage):
    job = sample_job_spec()
    artifact = ModelArtifact(
        uri="s3://models-bucket/churn/output/model.tar.gz", sha256="c0ffee" * 10 + "c0de", **lineage
    )

    options = ScriptOptions.for_job(
        job, input_dir="in", output_dir="out", model_path=container_model_path(artifact), model=artifact, workers=1
    )
    parsed = ScriptOptions.parse(options.to_argv())

    assert parsed.model_path.as_posix() == "/opt/ml/processing/input/model/model.tar.gz"  # the archive itself
    assert parsed.model_sha256 == artifact.sha256 != job.model.sha256
    assert parsed.model_artifact() == artifact
