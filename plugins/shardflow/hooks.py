"""The Airflow hook that owns Shardflow's AWS clients, job store and compute backends."""

from __future__ import annotations

from functools import cached_property
from typing import Any

from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

from shardflow.compute import ComputeBackend, get_backend
from shardflow.jobs import JobStore

__all__ = ["ShardflowHook"]


class ShardflowHook:
    """Clients built from one Airflow AWS connection (``endpoint_url`` in its extra for moto).

    :param aws_conn_id: the Airflow connection to AWS.
    :param job_table: the DynamoDB job table.
    """

    def __init__(self, aws_conn_id: str, job_table: str) -> None:
        self.aws_conn_id = aws_conn_id
        self.job_table = job_table

    def _aws(self, client_type: str) -> AwsBaseHook:
        return AwsBaseHook(aws_conn_id=self.aws_conn_id, client_type=client_type)

    @cached_property
    def s3(self) -> Any:
        return self._aws("s3").get_conn()

    @cached_property
    def store(self) -> JobStore:
        return JobStore(self._aws("dynamodb").get_conn(), self.job_table)

    def backend(self, name: str) -> ComputeBackend:
        """The compute backend ``name``, reaching AWS through this hook's connection."""
        if name == "local":
            return get_backend(name, aws_env=self._job_aws_env())
        if name == "sagemaker":
            # The backend builds its SageMaker and S3 clients from the connection, here and in the
            # triggerer alike: its config() names the connection, never its credentials.
            return get_backend(name, aws_conn_id=self.aws_conn_id)
        return get_backend(name)

    def _job_aws_env(self) -> dict[str, str]:
        """The connection's credentials, region and endpoint, handed to a local job the way
        SageMaker hands a role's credentials to its container."""
        hook = self._aws("s3")
        credentials = hook.get_credentials()
        env = {
            "AWS_ACCESS_KEY_ID": credentials.access_key,
            "AWS_SECRET_ACCESS_KEY": credentials.secret_key,
            "AWS_DEFAULT_REGION": hook.conn_region_name,
        }
        if credentials.token:
            env["AWS_SESSION_TOKEN"] = credentials.token
        if hook.conn_config.endpoint_url:
            env["AWS_ENDPOINT_URL"] = hook.conn_config.endpoint_url
        return env
