"""Deployment settings from the environment: the trigger form's SageMaker settings need the image
and the role together, and every bad value is reported by the variable that holds it."""

import pytest

from shardflow.errors import ConfigurationError
from shardflow.spec.settings import Settings, sagemaker_defaults

IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/shardflow-processing:0.1.0"
ROLE = "arn:aws:iam::123456789012:role/shardflow-dev-processing"
DEPLOYED = {"SHARDFLOW_SAGEMAKER_IMAGE_URI": IMAGE, "SHARDFLOW_SAGEMAKER_ROLE_ARN": ROLE}


def test_without_sagemaker_settings_the_form_offers_the_local_backend_only():
    settings = Settings.from_env({"SHARDFLOW_JOB_TABLE": "jobs-prod"})
    assert (settings.job_table, settings.sagemaker, settings.backends) == ("jobs-prod", None, ("local",))


def test_with_the_image_and_the_role_the_form_offers_sagemaker_too():
    settings = Settings.from_env({**DEPLOYED, "SHARDFLOW_SAGEMAKER_VOLUME_SIZE_GB": "120"})
    assert settings.backends == ("local", "sagemaker")
    assert settings.sagemaker is not None
    assert (settings.sagemaker.image_uri, settings.sagemaker.role_arn) == (IMAGE, ROLE)
    assert settings.sagemaker.volume_size_gb == 120


@pytest.mark.parametrize(
    ("environ", "missing"),
    [
        ({"SHARDFLOW_SAGEMAKER_IMAGE_URI": IMAGE}, "SHARDFLOW_SAGEMAKER_ROLE_ARN not set"),
        (
            {"SHARDFLOW_SAGEMAKER_ROLE_ARN": ROLE, "SHARDFLOW_SAGEMAKER_IMAGE_URI": "  "},
            "SHARDFLOW_SAGEMAKER_IMAGE_URI not set",
        ),
        (
            {"SHARDFLOW_SAGEMAKER_VOLUME_SIZE_GB": "50"},
            "SHARDFLOW_SAGEMAKER_IMAGE_URI, SHARDFLOW_SAGEMAKER_ROLE_ARN not set",
        ),
    ],
)
def test_half_the_sagemaker_settings_is_an_error_naming_what_is_missing(environ, missing):
    with pytest.raises(ConfigurationError, match=missing):
        Settings.from_env(environ)
    with pytest.raises(ConfigurationError, match="needs both SHARDFLOW_SAGEMAKER_IMAGE_URI and"):
        sagemaker_defaults(environ)


@pytest.mark.parametrize(
    ("variable", "value", "words"),
    [
        ("SHARDFLOW_SAGEMAKER_ROLE_ARN", "shardflow-dev-processing", "must be an IAM role ARN"),
        ("SHARDFLOW_SAGEMAKER_IMAGE_URI", "shardflow-processing:latest", "must be an ECR image"),
        ("SHARDFLOW_SAGEMAKER_VOLUME_SIZE_GB", "lots", "valid integer"),
        ("SHARDFLOW_SAGEMAKER_SUBNETS", "subnet-0123456789abcdef0,vpc-1", "'vpc-1': a subnet id looks like"),
    ],
)
def test_a_bad_sagemaker_setting_is_reported_by_its_variable(variable, value, words):
    environ = {**DEPLOYED, "SHARDFLOW_SAGEMAKER_SECURITY_GROUP_IDS": "sg-0123abcd", variable: value}
    with pytest.raises(ConfigurationError) as refused:
        Settings.from_env(environ)
    problem = str(refused.value).splitlines()[1].strip()
    assert problem.startswith(f"{variable}: ") and words in problem


def test_subnets_without_security_groups_name_the_variable_to_set():
    with pytest.raises(ConfigurationError) as refused:
        Settings.from_env({**DEPLOYED, "SHARDFLOW_SAGEMAKER_SUBNETS": "subnet-0123456789abcdef0"})
    assert "SHARDFLOW_SAGEMAKER_SECURITY_GROUP_IDS" in str(refused.value)


def test_lists_are_split_on_commas():
    settings = Settings.from_env(
        {
            **DEPLOYED,
            "SHARDFLOW_SAGEMAKER_SUBNETS": " subnet-0123456789abcdef0, subnet-0fedcba9876543210 ,",
            "SHARDFLOW_SAGEMAKER_SECURITY_GROUP_IDS": "sg-0123abcd",
            "SHARDFLOW_INSTANCE_QUOTAS": "ml.m5.xlarge=20, ml.c5.2xlarge=8",
        }
    )
    assert settings.sagemaker is not None
    assert settings.sagemaker.subnets == ["subnet-0123456789abcdef0", "subnet-0fedcba9876543210"]
    assert settings.sagemaker.security_group_ids == ["sg-0123abcd"]
    assert settings.instance_quotas == {"ml.m5.xlarge": 20, "ml.c5.2xlarge": 8}


@pytest.mark.parametrize(
    ("variable", "value", "words"),
    [
        ("SHARDFLOW_POLL_SECONDS", "soon", "SHARDFLOW_POLL_SECONDS='soon' is not a whole number of seconds"),
        ("SHARDFLOW_INSTANCE_QUOTAS", "ml.m5.xlarge:20", "SHARDFLOW_INSTANCE_QUOTAS: instance quota 'ml.m5.xlarge:20'"),
    ],
)
def test_other_bad_settings_name_their_variable(variable, value, words):
    with pytest.raises(ConfigurationError, match=words):
        Settings.from_env({variable: value})
