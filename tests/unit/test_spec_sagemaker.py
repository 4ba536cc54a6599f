"""The spec's ``compute.sagemaker`` block: every bad value fails at parse time, naming its field."""

from pathlib import Path

import pytest
import yaml

from shardflow.spec import SpecError, parse_spec

REPO = Path(__file__).resolve().parents[2]
IMAGE = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/shardflow-processing:2026.01.1"
ROLE = "arn:aws:iam::123456789012:role/shardflow-prod-processing"


def sagemaker_spec(**block) -> dict:
    data = yaml.safe_load((REPO / "dags" / "pipelines" / "demo.yaml").read_text())
    data["compute"]["backend"] = "sagemaker"
    data["compute"]["sagemaker"] = {"image_uri": IMAGE, "role_arn": ROLE, **block}
    return data


def error_line(data: dict, field: str) -> str:
    with pytest.raises(SpecError) as raised:
        parse_spec(data, "pipelines/demo.yaml")
    message = str(raised.value)
    assert message.startswith("pipelines/demo.yaml: invalid pipeline spec")
    return next(line for line in message.splitlines() if line.strip().startswith(f"{field}:"))


def test_a_full_block_parses_into_typed_settings():
    spec = parse_spec(
        sagemaker_spec(
            volume_size_gb=100,
            volume_kms_key_id="arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab",
            subnets=["subnet-0123456789abcdef0"],
            security_group_ids=["sg-0123abcd"],
            tags={"team": "risk", "cost-center": "ml/batch"},
            environment={"SHARDFLOW_HEARTBEAT_SECONDS": "30"},
        )
    )
    settings = spec.compute.sagemaker
    assert settings is not None
    assert (settings.volume_size_gb, settings.network_isolation) == (100, False)
    assert settings.image_region() == "eu-west-1"


def test_the_block_is_required_with_the_sagemaker_backend_and_optional_without():
    data = sagemaker_spec()
    del data["compute"]["sagemaker"]
    assert "required when backend is sagemaker" in error_line(data, "compute.sagemaker")
    data = sagemaker_spec()
    data["compute"]["backend"] = "local"  # kept for a switch back; the local backend ignores it
    assert parse_spec(data).compute.sagemaker is not None


@pytest.mark.parametrize(
    ("block", "field", "words"),
    [
        ({"image_uri": "shardflow-processing:latest"}, "compute.sagemaker.image_uri", "ECR image"),
        ({"image_uri": IMAGE.rsplit(":", 1)[0]}, "compute.sagemaker.image_uri", "with a tag or digest"),
        ({"role_arn": "shardflow-prod-processing"}, "compute.sagemaker.role_arn", "IAM role ARN"),
        ({"role_arn": "arn:aws:iam::123456789012:user/me"}, "compute.sagemaker.role_arn", "IAM role ARN"),
        ({"volume_size_gb": 0}, "compute.sagemaker.volume_size_gb", "greater than or equal to 1"),
        ({"volume_kms_key_id": "my key"}, "compute.sagemaker.volume_kms_key_id", "KMS key"),
        (
            {"subnets": ["vpc-0123abcd"], "security_group_ids": ["sg-0123abcd"]},
            "compute.sagemaker.subnets",
            "subnet-",
        ),
        ({"subnets": ["subnet-0123abcd"]}, "compute.sagemaker", "go together"),
        ({"network_isolation": True}, "compute.sagemaker.network_isolation", "DynamoDB job table"),
        ({"tags": {"aws:owner": "me"}}, "compute.sagemaker.tags", "not starting with aws:"),
        ({"tags": {"team": "r&d"}}, "compute.sagemaker.tags", "value"),
        ({"environment": {"SHARDFLOW_JOB_ID": "x"}}, "compute.sagemaker.environment", "set by Shardflow"),
        ({"environment": {"1BAD": "x"}}, "compute.sagemaker.environment", "not a variable name"),
        ({"environment": {"NOTE": "x" * 300}}, "compute.sagemaker.environment", "at most 256"),
        ({"imageuri": IMAGE}, "compute.sagemaker.imageuri", "unknown field"),
    ],
)
def test_a_bad_value_names_its_field(block, field, words):
    assert words in error_line(sagemaker_spec(**block), field)


def test_column_lists_must_fit_a_container_argument_on_sagemaker_only():
    data = sagemaker_spec()
    data["features"] = [f"a_rather_long_feature_name_{i:03d}" for i in range(12)]
    assert "SageMaker passes each container argument only up to 256" in error_line(data, "features")
    data["compute"]["backend"] = "local"
    assert parse_spec(data).features is not None
