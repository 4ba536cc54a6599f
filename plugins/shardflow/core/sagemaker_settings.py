"""The ``sagemaker`` backend's settings of a job (a spec's ``compute.sagemaker`` block, or the
deployment's defaults for the trigger form): checked against SageMaker's rules when parsed."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import Field, field_validator, model_validator

from shardflow.contract import MAX_ARGUMENT_CHARS, RESERVED_ENVIRONMENT
from shardflow.core.strict import Strict

__all__ = ["ECR_IMAGE", "SageMakerSpec"]

ECR_IMAGE = re.compile(
    r"^(?P<account>\d{12})\.dkr\.ecr(?:-fips)?\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(?:\.cn)?"
    r"/[a-z0-9]+(?:[._/-][a-z0-9]+)*(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}|@sha256:[0-9a-f]{64})$"
)
_ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[A-Za-z0-9_+=,.@/-]{1,512}$")
_KMS_KEY = re.compile(
    r"^(?:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|alias/[A-Za-z0-9/_-]{1,250}"
    r"|arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:(?:key/[0-9a-f-]{36}|alias/[A-Za-z0-9/_-]{1,250}))$"
)
_SUBNET = re.compile(r"^subnet-[0-9a-f]{8}(?:[0-9a-f]{9})?$")
_SECURITY_GROUP = re.compile(r"^sg-[0-9a-f]{8}(?:[0-9a-f]{9})?$")
_TAG_KEY = re.compile(r"^[\w\s.:/=+@-]{1,128}$")
_TAG_VALUE = re.compile(r"^[\w\s.:/=+@-]{0,256}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,255}$")


def _ids_like(values: list[str], pattern: re.Pattern[str], example: str) -> list[str]:
    bad = [v for v in values if not pattern.fullmatch(v)]
    if bad:
        raise ValueError(f"{', '.join(map(repr, bad))}: {example}")
    return values


class SageMakerSpec(Strict):
    """How the ``sagemaker`` backend runs the job (the spec's ``compute.sagemaker`` block).

    :param image_uri: the processing image in ECR (``containers/Dockerfile``), with a tag or digest.
    :param role_arn: the execution role the job runs as (the stack's ``ProcessingRoleArn``).
    :param volume_size_gb: the storage volume of each instance; it holds the instance's inputs
        and outputs, so size it for its shard.
    :param volume_kms_key_id: a KMS key (id, alias or ARN) that encrypts the storage volumes.
    :param subnets: VPC subnets to run in; given together with ``security_group_ids``.
    :param security_group_ids: VPC security groups; given together with ``subnets``.
    :param network_isolation: must stay ``false``: the script reports to the DynamoDB job table.
    :param tags: tags on the processing job.
    :param environment: extra environment variables for the processing script.
    """

    image_uri: str
    role_arn: str
    volume_size_gb: Annotated[int, Field(ge=1, le=16384)] = 30
    volume_kms_key_id: str | None = None
    subnets: Annotated[list[str], Field(max_length=16)] = []
    security_group_ids: Annotated[list[str], Field(max_length=5)] = []
    network_isolation: bool = False
    tags: Annotated[dict[str, str], Field(max_length=50)] = {}
    environment: Annotated[dict[str, str], Field(max_length=90)] = {}

    @field_validator("image_uri")
    @classmethod
    def _image_uri(cls, value: str) -> str:
        if len(value) > 255 or not ECR_IMAGE.fullmatch(value):
            raise ValueError(
                "must be an ECR image with a tag or digest, such as "
                "123456789012.dkr.ecr.us-east-1.amazonaws.com/shardflow-processing:1.0 "
                "(build and push containers/Dockerfile: see containers/README.md)"
            )
        return value

    @field_validator("role_arn")
    @classmethod
    def _role_arn(cls, value: str) -> str:
        if not _ROLE_ARN.fullmatch(value):
            raise ValueError(
                "must be an IAM role ARN such as arn:aws:iam::123456789012:role/shardflow-dev-processing "
                "(the stack's ProcessingRoleArn output)"
            )
        return value

    @field_validator("volume_kms_key_id")
    @classmethod
    def _kms_key(cls, value: str | None) -> str | None:
        if value is not None and not _KMS_KEY.fullmatch(value):
            raise ValueError("must be a KMS key id, key ARN, alias/<name> or alias ARN")
        return value

    @field_validator("subnets")
    @classmethod
    def _subnets(cls, value: list[str]) -> list[str]:
        return _ids_like(value, _SUBNET, "a subnet id looks like subnet-0123456789abcdef0")

    @field_validator("security_group_ids")
    @classmethod
    def _security_groups(cls, value: list[str]) -> list[str]:
        return _ids_like(value, _SECURITY_GROUP, "a security group id looks like sg-0123456789abcdef0")

    @field_validator("network_isolation")
    @classmethod
    def _network_isolation(cls, value: bool) -> bool:
        if value:
            raise ValueError(
                "must be false: an isolated container cannot report its files to the DynamoDB job table, "
                "so every job would fail; to keep traffic private, give subnets with S3 and DynamoDB "
                "VPC endpoints instead"
            )
        return value

    @field_validator("tags")
    @classmethod
    def _tags(cls, value: dict[str, str]) -> dict[str, str]:
        for key, text in value.items():
            if not _TAG_KEY.fullmatch(key) or key.lower().startswith("aws:"):
                raise ValueError(f"tag key {key!r}: 1-128 letters, digits, spaces or _.:/=+@-, not starting with aws:")
            if not _TAG_VALUE.fullmatch(text):
                raise ValueError(f"tag {key!r}: the value may hold up to 256 letters, digits, spaces or _.:/=+@-")
        return value

    @field_validator("environment")
    @classmethod
    def _environment(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            if not _ENV_NAME.fullmatch(name):
                raise ValueError(f"{name!r} is not a variable name (letters, digits and _, not starting with a digit)")
            if name in RESERVED_ENVIRONMENT:
                raise ValueError(f"{name} is set by Shardflow for each job: remove it")
            if len(text) > MAX_ARGUMENT_CHARS:
                raise ValueError(
                    f"{name}: the value is {len(text)} characters; SageMaker passes at most {MAX_ARGUMENT_CHARS}"
                )
        return value

    @model_validator(mode="after")
    def _vpc(self) -> SageMakerSpec:
        if bool(self.subnets) != bool(self.security_group_ids):
            raise ValueError("subnets and security_group_ids go together: give both to run in a VPC, or neither")
        return self

    def image_region(self) -> str:
        """The AWS region of the image's registry; SageMaker pulls images only from its own region."""
        match = ECR_IMAGE.fullmatch(self.image_uri)
        assert match is not None  # checked when the spec was parsed
        return match["region"]
