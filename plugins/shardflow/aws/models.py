"""``SageMakerModelCatalog``: finds a model by name in SageMaker, a training job's artifact or the
newest approved package of a Model Registry group (the core's ``ModelCatalog`` port)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from botocore.exceptions import ClientError

from shardflow.core.ports import ModelPackage
from shardflow.errors import AccessDenied, ResourceError

__all__ = ["SageMakerModelCatalog"]

_DENIED = frozenset({"AccessDenied", "AccessDeniedException", "UnauthorizedOperation"})


@contextmanager
def _named_faults(what: str, action: str, fix: str) -> Iterator[None]:
    """SageMaker answers a missing resource with a ValidationException; name it, and a refusal."""
    try:
        yield
    except ClientError as error:
        code = str(error.response.get("Error", {}).get("Code", ""))
        message = str(error.response.get("Error", {}).get("Message", ""))
        if code in _DENIED:
            raise AccessDenied(
                f"access denied to {what} ({code}): give the credentials in use {action} on it"
            ) from None
        if code in ("ValidationException", "ResourceNotFound"):
            raise ResourceError(f"{what} was not found ({message}): {fix}") from None
        raise


class SageMakerModelCatalog:
    """The :class:`~shardflow.core.ports.ModelCatalog` on a boto3 SageMaker client.

    :param client: ``boto3.client("sagemaker")`` (or an Airflow hook's).
    """

    def __init__(self, client: Any) -> None:
        self.client = client

    def training_job_model(self, name: str) -> str:
        with _named_faults(
            f"training job {name}",
            "sagemaker:DescribeTrainingJob",
            "check the spec's model.training_job and the region in use",
        ):
            job = self.client.describe_training_job(TrainingJobName=name)
        status = job.get("TrainingJobStatus")
        if status != "Completed":
            raise ResourceError(
                f"training job {name} is {status}, not Completed: its model is not final; wait for it to "
                "complete, or name a completed training job in the spec's model.training_job"
            )
        uri = job.get("ModelArtifacts", {}).get("S3ModelArtifacts")
        if not uri:
            raise ResourceError(f"training job {name} completed without ModelArtifacts.S3ModelArtifacts")
        return str(uri)

    def newest_package(self, group: str, status: str) -> ModelPackage:
        with _named_faults(
            f"model package group {group}",
            "sagemaker:DescribeModelPackageGroup",
            "check the spec's model.registry.group and the region in use",
        ):
            self.client.describe_model_package_group(ModelPackageGroupName=group)
        summaries = list(self._packages(group, status))
        if not summaries:
            raise ResourceError(
                f"model package group {group} has no package with approval status {status}: approve a package "
                "(aws sagemaker update-model-package --model-approval-status Approved) or change "
                "the spec's model.registry.status"
            )
        # Versions grow with creation; the version breaks a tie between packages made in one instant.
        newest = max(summaries, key=lambda s: (s["CreationTime"], s.get("ModelPackageVersion", 0)))
        arn = str(newest["ModelPackageArn"])
        with _named_faults(f"model package {arn}", "sagemaker:DescribeModelPackage", "check the registry"):
            package = self.client.describe_model_package(ModelPackageName=arn)
        containers = package.get("InferenceSpecification", {}).get("Containers", [])
        urls = [c["ModelDataUrl"] for c in containers if c.get("ModelDataUrl")]
        if len(urls) != 1:
            raise ResourceError(
                f"model package {arn} names {len(urls)} ModelDataUrl(s) in its InferenceSpecification; "
                "Shardflow loads a package with exactly one: register the model with one container"
            )
        sha256 = package.get("CustomerMetadataProperties", {}).get("sha256")
        return ModelPackage(
            arn=arn,
            group=str(package.get("ModelPackageGroupName", group)),
            version=int(package.get("ModelPackageVersion", newest.get("ModelPackageVersion", 0))),
            model_data_url=str(urls[0]),
            sha256=None if sha256 is None else str(sha256),
        )

    def _packages(self, group: str, status: str) -> Iterator[dict[str, Any]]:
        paginator = self.client.get_paginator("list_model_packages")
        with _named_faults(f"model package group {group}", "sagemaker:ListModelPackages", "check the registry"):
            for page in paginator.paginate(ModelPackageGroupName=group, ModelApprovalStatus=status):
                yield from page.get("ModelPackageSummaryList", [])
