"""The Airflow hook that owns Shardflow's AWS clients, job store and compute backends."""

from __future__ import annotations

from functools import cached_property
from typing import Any

from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

from shardflow.aws.jobstore import JobStore
from shardflow.aws.models import SageMakerModelCatalog
from shardflow.aws.s3 import S3ObjectStore
from shardflow.compute import get_backend
from shardflow.core.ports import ComputeBackend

__all__ = ["ShardflowHook", "backend_from_config"]


def backend_from_config(name: str, config: dict[str, Any]) -> ComputeBackend:
    """Rebuild a backend from what its ``config()`` returned (in the triggerer): a SageMaker
    backend's clients come from the Airflow connection its config names."""
    conn_id = config.get("aws_conn_id")
    if name == "sagemaker" and conn_id:
        region = config.get("region_name")

        def clients(service: str) -> Any:
            return AwsBaseHook(aws_conn_id=conn_id, client_type=service, region_name=region).get_conn()

        return get_backend(name, **config, client_factory=clients)
    return get_backend(name, **config)


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
    def objects(self) -> S3ObjectStore:
        return S3ObjectStore(self.s3)

    @cached_property
    def models(self) -> SageMakerModelCatalog:
        """Training jobs and Model Registry packages, for resolving a spec's model in prepare."""
        return SageMakerModelCatalog(self._aws("sagemaker").get_conn())

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
            return backend_from_config(name, {"aws_conn_id": self.aws_conn_id})
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
