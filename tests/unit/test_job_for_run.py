"""The trigger form and a run's dates become the one job description: the deployment's SageMaker
settings fill a sagemaker form, and a form that could never run is refused naming its field."""

import pytest

from shardflow.core.sagemaker_settings import SageMakerSpec
from shardflow.errors import PrepareError, SpecError
from shardflow.spec.jobs import job_for_run, spec_from_form
from shardflow.spec.settings import Settings

IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/shardflow-processing:0.1.0"
ROLE = "arn:aws:iam::123456789012:role/shardflow-dev-processing"
DEPLOYED = SageMakerSpec(image_uri=IMAGE, role_arn=ROLE, volume_size_gb=120, tags={"team": "risk"})
FORM = {
    "model_uri": "s3://models-bucket/churn/model.joblib",
    "model_sha256": "a" * 64,
    "input_prefix": "s3://data-bucket/events/dt=2026-01-31/",
    "output_prefix": "s3://data-bucket/scores/adhoc/run-1/",
    "instance_type": "ml.c5.2xlarge",
    "instance_count": 3,
    "max_attempts": 2,
}


def test_a_sagemaker_form_runs_with_the_deployments_settings():
    settings = Settings(sagemaker=DEPLOYED, instance_quotas={"ml.c5.2xlarge": 4})

    spec = spec_from_form({**FORM, "backend": "sagemaker"}, settings)
    job = job_for_run(spec, run_id="manual__2026-01-31T10:00", when="2026-01-31", dag_id="shardflow_adhoc")

    assert (job.pipeline, job.dag_id, job.run_id) == ("adhoc", "shardflow_adhoc", "manual__2026-01-31T10:00")
    assert job.compute.backend == "sagemaker" and job.compute.sagemaker == DEPLOYED
    assert (job.compute.instance_type, job.compute.instance_count, job.retries.max_attempts) == ("ml.c5.2xlarge", 3, 2)
    assert (job.input.prefix, job.output.prefix) == (FORM["input_prefix"], FORM["output_prefix"])
    assert job.model.uri == FORM["model_uri"]


def test_a_local_form_leaves_the_sagemaker_settings_out():
    job = job_for_run(spec_from_form(FORM, Settings(sagemaker=DEPLOYED)), run_id="manual__1", when="2026-01-31")
    assert (job.compute.backend, job.compute.sagemaker) == ("local", None)


def test_a_sagemaker_form_without_deployed_settings_names_compute_sagemaker():
    with pytest.raises(SpecError) as refused:
        spec_from_form({**FORM, "backend": "sagemaker"}, Settings())
    lines = str(refused.value).splitlines()
    assert lines[0] == "the trigger form: invalid pipeline spec"
    assert lines[1].startswith("  compute.sagemaker: required when backend is sagemaker")


def test_a_bad_form_value_is_named_by_its_field():
    with pytest.raises(SpecError, match=r"  model\.sha256: must be 64 hexadecimal characters"):
        spec_from_form({**FORM, "model_sha256": "abc"}, Settings())


@pytest.mark.parametrize(
    ("quotas", "words"),
    [
        ({"ml.c5.2xlarge": 2}, r"instance_count: 3 instances of ml\.c5\.2xlarge exceed its quota of 2"),
        ({"ml.m5.xlarge": 8}, r"instance_count: ml\.c5\.2xlarge has no quota in SHARDFLOW_INSTANCE_QUOTAS"),
    ],
)
def test_a_form_over_its_instance_quota_can_never_start(quotas, words):
    with pytest.raises(PrepareError, match="the trigger form: " + words):
        spec_from_form(FORM, Settings(instance_quotas=quotas))
