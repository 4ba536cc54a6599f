"""Deployment settings read from the environment, shared by every Airflow component and the CLI."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from pydantic import ValidationError

from shardflow.core.sagemaker_settings import SageMakerSpec
from shardflow.errors import ConfigurationError
from shardflow.spec.quotas import parse_quotas

__all__ = ["SAGEMAKER_VARIABLES", "Settings", "sagemaker_defaults"]

#: The trigger form's SageMaker settings: environment variable -> field of ``compute.sagemaker``.
SAGEMAKER_VARIABLES: dict[str, str] = {
    "SHARDFLOW_SAGEMAKER_IMAGE_URI": "image_uri",
    "SHARDFLOW_SAGEMAKER_ROLE_ARN": "role_arn",
    "SHARDFLOW_SAGEMAKER_VOLUME_SIZE_GB": "volume_size_gb",
    "SHARDFLOW_SAGEMAKER_VOLUME_KMS_KEY_ID": "volume_kms_key_id",
    "SHARDFLOW_SAGEMAKER_SUBNETS": "subnets",
    "SHARDFLOW_SAGEMAKER_SECURITY_GROUP_IDS": "security_group_ids",
}
_LISTS = frozenset({"subnets", "security_group_ids"})


def sagemaker_defaults(environ: Mapping[str, str]) -> SageMakerSpec | None:
    """The deployment's SageMaker settings for ad-hoc runs; ``None`` unless both the image and the
    role are set. :raises ConfigurationError: a set value breaks SageMaker's rules (named)."""
    values: dict[str, object] = {}
    for variable, name in SAGEMAKER_VARIABLES.items():
        text = environ.get(variable, "").strip()
        if text:
            values[name] = [part.strip() for part in text.split(",") if part.strip()] if name in _LISTS else text
    if not values:
        return None
    missing = [v for v, n in SAGEMAKER_VARIABLES.items() if n in ("image_uri", "role_arn") and n not in values]
    if missing:
        raise ConfigurationError(
            f"{', '.join(missing)} not set: the trigger form's sagemaker backend needs both "
            "SHARDFLOW_SAGEMAKER_IMAGE_URI and SHARDFLOW_SAGEMAKER_ROLE_ARN (or neither, for local runs only)"
        )
    try:
        return SageMakerSpec.model_validate(values)
    except ValidationError as error:
        names = {n: v for v, n in SAGEMAKER_VARIABLES.items()}
        # A rule across fields (subnets with security groups) names every variable it involves.
        together = " and ".join(names[n] for n in ("subnets", "security_group_ids"))
        problems = [
            f"  {names.get(str(item['loc'][0]), item['loc'][0]) if item['loc'] else together}: "
            f"{item['msg'].removeprefix('Value error, ')}"
            for item in error.errors()
        ]
        raise ConfigurationError("the trigger form's SageMaker settings are invalid:\n" + "\n".join(problems)) from None


@dataclass(frozen=True)
class Settings:
    """:param job_table: the DynamoDB job table (``SHARDFLOW_JOB_TABLE``).
    :param aws_conn_id: the Airflow connection to AWS (``SHARDFLOW_AWS_CONN_ID``).
    :param instance_quotas: instances of each type that may run at once, from
        ``SHARDFLOW_INSTANCE_QUOTAS`` (``ml.m5.xlarge=20,ml.c5.2xlarge=8``); empty: not checked.
    :param poll_seconds: how often a waiting task reads its job record (``SHARDFLOW_POLL_SECONDS``).
    :param sagemaker: the trigger form's ``compute.sagemaker`` settings, from the
        ``SHARDFLOW_SAGEMAKER_*`` variables (:data:`SAGEMAKER_VARIABLES`); ``None``: the form offers
        only the local backend."""

    job_table: str = "shardflow-jobs"
    aws_conn_id: str = "aws_default"
    instance_quotas: Mapping[str, int] = field(default_factory=dict)
    poll_seconds: int = 10
    sagemaker: SageMakerSpec | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        try:
            poll_seconds = int(env.get("SHARDFLOW_POLL_SECONDS", cls.poll_seconds))
        except ValueError:
            raise ConfigurationError(
                f"SHARDFLOW_POLL_SECONDS={env['SHARDFLOW_POLL_SECONDS']!r} is not a whole number of seconds"
            ) from None
        try:
            quotas = parse_quotas(env.get("SHARDFLOW_INSTANCE_QUOTAS", ""))
        except ValueError as error:
            raise ConfigurationError(f"SHARDFLOW_INSTANCE_QUOTAS: {error}") from None
        return cls(
            job_table=env.get("SHARDFLOW_JOB_TABLE", cls.job_table),
            aws_conn_id=env.get("SHARDFLOW_AWS_CONN_ID", cls.aws_conn_id),
            instance_quotas=quotas,
            poll_seconds=poll_seconds,
            sagemaker=sagemaker_defaults(env),
        )

    @property
    def backends(self) -> tuple[str, ...]:
        """The backends the trigger form offers: ``sagemaker`` only when its settings are deployed."""
        return ("local", "sagemaker") if self.sagemaker is not None else ("local",)
