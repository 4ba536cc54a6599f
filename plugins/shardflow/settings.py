"""Deployment settings read from the environment, shared by every Airflow component and the CLI."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from shardflow.pools import parse_quotas

__all__ = ["Settings"]


@dataclass(frozen=True)
class Settings:
    """:param job_table: the DynamoDB job table (``SHARDFLOW_JOB_TABLE``).
    :param aws_conn_id: the Airflow connection to AWS (``SHARDFLOW_AWS_CONN_ID``).
    :param instance_quotas: instances of each type that may run at once, from
        ``SHARDFLOW_INSTANCE_QUOTAS`` (``ml.m5.xlarge=20,ml.c5.2xlarge=8``); empty: not checked.
    :param poll_seconds: how often a waiting task reads its job record (``SHARDFLOW_POLL_SECONDS``)."""

    job_table: str = "shardflow-jobs"
    aws_conn_id: str = "aws_default"
    instance_quotas: Mapping[str, int] = field(default_factory=dict)
    poll_seconds: int = 10

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            job_table=os.environ.get("SHARDFLOW_JOB_TABLE", cls.job_table),
            aws_conn_id=os.environ.get("SHARDFLOW_AWS_CONN_ID", cls.aws_conn_id),
            instance_quotas=parse_quotas(os.environ.get("SHARDFLOW_INSTANCE_QUOTAS", "")),
            poll_seconds=int(os.environ.get("SHARDFLOW_POLL_SECONDS", cls.poll_seconds)),
        )
