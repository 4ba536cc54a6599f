"""The SageMaker Processing request of one attempt: checked against SageMaker's rules, then built.

Pure functions over a :class:`~shardflow.core.ports.ProcessingRequest`; nothing here talks to AWS.
"""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import ValidationError

from shardflow.contract import (
    INPUT_DIR,
    MAX_ARGUMENT_CHARS,
    MAX_ENVIRONMENT_VARIABLES,
    MAX_INSTANCES,
    MAX_RUNTIME_SECONDS,
    MODEL_DIR,
    OUTPUT_DIR,
)
from shardflow.core.invocation import ScriptOptions, container_model_path
from shardflow.core.job import INSTANCE_TYPE
from shardflow.core.ports import ProcessingRequest
from shardflow.core.s3uri import S3Uri, check_s3_uri
from shardflow.core.sagemaker_settings import SageMakerSpec
from shardflow.core.staging import job_staging
from shardflow.errors import InvalidProcessingRequest

__all__ = [
    "InvalidProcessingRequest",
    "build_create_request",
    "container_arguments",
    "environment",
    "input_manifest",
    "validate_request",
]

_JOB_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")


def validate_request(request: ProcessingRequest, region: str | None = None) -> SageMakerSpec:
    """The request's SageMaker settings, once every rule holds; else :class:`InvalidProcessingRequest`.

    The fields are named as in the pipeline spec. ``region`` is the job's, when known: SageMaker
    pulls images only from an ECR registry in its own region.
    """
    settings = request.job.compute.sagemaker
    problems: list[str] = []
    if settings is None:
        problems.append("compute.sagemaker: required by the sagemaker backend (image_uri and role_arn at least)")
    else:
        # Checked again: a record written by another version, or edited by hand, reaches here too.
        try:
            settings = SageMakerSpec.model_validate(settings.model_dump(mode="json"))
        except ValidationError as error:
            for item in error.errors():
                where = ".".join(["compute.sagemaker", *(str(part) for part in item["loc"])])
                problems.append(f"{where}: {item['msg'].removeprefix('Value error, ')}")
            settings = None
    problems += _request_problems(request)
    if settings is not None:
        if region and settings.image_region() != region:
            problems.append(
                f"compute.sagemaker.image_uri: the image is in {settings.image_region()} but the job runs in "
                f"{region}; push the image to an ECR repository in the job's region"
            )
        count = len(environment(request, settings, region or ""))
        if count > MAX_ENVIRONMENT_VARIABLES:
            problems.append(
                f"compute.sagemaker.environment: {count} variables in all; SageMaker allows {MAX_ENVIRONMENT_VARIABLES}"
            )
    if problems or settings is None:
        raise InvalidProcessingRequest(
            f"processing job {request.job_name}: the request was not sent to SageMaker:\n"
            + "\n".join(f"  {p}" for p in problems)
        )
    return settings


def _request_problems(request: ProcessingRequest) -> list[str]:
    """What SageMaker would refuse in the request itself (the name, the cluster, the addresses)."""
    problems: list[str] = []
    if not _JOB_NAME.fullmatch(request.job_name):
        problems.append(
            f"job name: {request.job_name!r} must be 1-63 letters, digits and hyphens, "
            "starting and ending with a letter or digit"
        )
    job = request.job
    if not INSTANCE_TYPE.fullmatch(job.compute.instance_type):
        problems.append(f"compute.instance_type: {job.compute.instance_type!r} is not of the form ml.<family>.<size>")
    if not 1 <= request.instance_count <= MAX_INSTANCES:
        problems.append(f"compute.instance_count: {request.instance_count}; SageMaker allows 1-{MAX_INSTANCES}")
    elif request.dynamic and request.instance_count > request.units:
        problems.append(
            f"compute.instance_count: {request.instance_count} instances for {request.units} work unit(s); "
            "an instance without a unit to claim is paid for nothing"
        )
    elif not request.dynamic and request.instance_count > len(request.input_keys):
        problems.append(
            f"compute.instance_count: {request.instance_count} instances for {len(request.input_keys)} input "
            "object(s); an instance without an object is paid for nothing"
        )
    if not 1 <= job.compute.max_runtime_seconds <= MAX_RUNTIME_SECONDS:
        problems.append(
            f"compute.max_runtime_seconds: {job.compute.max_runtime_seconds}; SageMaker allows 1-{MAX_RUNTIME_SECONDS}"
        )
    for field, uri, is_prefix in (
        ("input.prefix", job.input.prefix, True),
        ("output.prefix", job.output.prefix, True),
        ("model.uri", request.artifact.uri, False),
    ):
        try:
            check_s3_uri(uri, prefix=is_prefix)
        except ValueError as error:
            problems.append(f"{field}: {uri!r} {error}")
    if not problems and len(str(request.staging_prefix)) > 1024:
        problems.append(
            f"output.prefix: with the attempt's staging folder, {request.staging_prefix} is longer than the 1024 "
            "characters SageMaker accepts: use a shorter output prefix"
        )
    prefix_key = job.input.prefix.removeprefix("s3://").partition("/")[2]
    outside = [key for key in request.input_keys if not key.startswith(prefix_key)]
    if outside:
        problems.append(f"input keys: {len(outside)} lie outside {job.input.prefix}, e.g. {outside[0]!r}")
    if not problems:  # the arguments name the model file, so they need a valid model.uri
        arguments = container_arguments(request)
        pairs = zip(["", *arguments[:-1]], arguments, strict=True)
        too_long = [(flag, arg) for flag, arg in pairs if len(arg) > MAX_ARGUMENT_CHARS]
        if too_long:
            flag, arg = too_long[0]
            what = "features/passthrough" if flag in ("--features", "--passthrough") else f"the model's {flag}"
            problems.append(
                f"{what}: {arg[:40]!r}... is longer than the {MAX_ARGUMENT_CHARS} characters SageMaker "
                "passes in one container argument: shorten it, or leave it out of the spec"
            )
    return problems


def container_arguments(request: ProcessingRequest) -> list[str]:
    """The processing script's command line inside the image (its entrypoint is the script)."""
    options = ScriptOptions.for_job(
        request.job,
        input_dir=INPUT_DIR,
        output_dir=OUTPUT_DIR,
        model_path=container_model_path(request.artifact),
        model=request.artifact,
        claim_units=request.dynamic,
    )
    return options.to_argv()


def environment(request: ProcessingRequest, settings: SageMakerSpec, region: str) -> dict[str, str]:
    """The script's environment: boto3 in the container finds its region only through
    ``AWS_DEFAULT_REGION``; the job id and table it reports to come last, so nothing overrides them."""
    return {"AWS_DEFAULT_REGION": region, **settings.environment, **request.environment()}


def input_manifest(request: ProcessingRequest) -> tuple[S3Uri, bytes]:
    """Where the job's input manifest goes and what it holds: SageMaker's ManifestFile format,
    the input prefix and then every key relative to it, so each file keeps its relative path."""
    prefix = S3Uri.parse(request.job.input.prefix)
    entries: list[Any] = [{"prefix": str(prefix)}]
    entries += sorted(key[len(prefix.key) :] for key in request.input_keys)
    where = job_staging(request.job.output.prefix, request.job_id).join("input-manifests", f"{request.job_name}.json")
    return where, json.dumps(entries, indent=0).encode()


def build_create_request(
    request: ProcessingRequest, settings: SageMakerSpec, region: str, manifest: S3Uri | None = None
) -> dict[str, Any]:
    """The CreateProcessingJob request: the inputs sharded by S3 key over the instances (from the
    prefix, or from ``manifest`` when only some of its objects are to be processed; none for a
    dynamic job, whose instances claim units), the model copied to every instance, and the
    outputs uploaded to the attempt's staging when the job ends."""
    data_source = (
        {"S3Uri": str(manifest), "S3DataType": "ManifestFile"}
        if manifest
        else {"S3Uri": request.job.input.prefix, "S3DataType": "S3Prefix"}
    )
    cluster: dict[str, Any] = {
        "InstanceCount": request.instance_count,
        "InstanceType": request.job.compute.instance_type,
        "VolumeSizeInGB": settings.volume_size_gb,
    }
    if settings.volume_kms_key_id:
        cluster["VolumeKmsKeyId"] = settings.volume_kms_key_id
    network: dict[str, Any] = {"EnableNetworkIsolation": settings.network_isolation}
    if settings.subnets:
        network["VpcConfig"] = {"Subnets": settings.subnets, "SecurityGroupIds": settings.security_group_ids}
    data = {
        "InputName": "data",
        "S3Input": {
            **data_source,
            "LocalPath": INPUT_DIR,
            "S3InputMode": "File",
            "S3DataDistributionType": "ShardedByS3Key",
            "S3CompressionType": "None",
        },
    }
    body: dict[str, Any] = {
        "ProcessingJobName": request.job_name,
        # Dynamic distribution: no data input; the instances claim units from the job record.
        "ProcessingInputs": [
            *([] if request.dynamic else [data]),
            {
                # A key is a prefix too: objects whose keys extend the model's come along, unused.
                # An archive (a training job's model.tar.gz) is copied as it is: the script
                # checks its sha256 and unpacks it.
                "InputName": "model",
                "S3Input": {
                    "S3Uri": request.artifact.uri,
                    "S3DataType": "S3Prefix",
                    "LocalPath": MODEL_DIR,
                    "S3InputMode": "File",
                    "S3DataDistributionType": "FullyReplicated",
                    "S3CompressionType": "None",
                },
            },
        ],
        "ProcessingOutputConfig": {
            "Outputs": [
                {
                    "OutputName": "predictions",
                    # The attempt's staging, never the output prefix: a job that outlives its
                    # attempt (not stopped, or stopping) uploads where nothing is published.
                    "S3Output": {
                        "S3Uri": str(request.staging_prefix),
                        "LocalPath": OUTPUT_DIR,
                        "S3UploadMode": "EndOfJob",
                    },
                }
            ]
        },
        "ProcessingResources": {"ClusterConfig": cluster},
        "StoppingCondition": {"MaxRuntimeInSeconds": request.job.compute.max_runtime_seconds},
        "AppSpecification": {"ImageUri": settings.image_uri, "ContainerArguments": container_arguments(request)},
        "Environment": environment(request, settings, region),
        "NetworkConfig": network,
        "RoleArn": settings.role_arn,
    }
    if settings.tags:
        body["Tags"] = [{"Key": key, "Value": value} for key, value in sorted(settings.tags.items())]
    return body
