"""The SageMaker Processing request of one attempt: checked against SageMaker's rules, then built.

Pure functions over a :class:`~shardflow.compute.base.ProcessingRequest`; nothing here talks to AWS.
"""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import ValidationError

from shardflow.compute.base import ProcessingRequest, ProcessingRequestRefused
from shardflow.s3 import S3Uri
from shardflow.spec import INSTANCE_TYPE, SAGEMAKER_MAX_ARGUMENT, SageMakerSpec, check_s3_uri

__all__ = [
    "INPUT_DIR",
    "MODEL_DIR",
    "OUTPUT_DIR",
    "InvalidProcessingRequest",
    "build_create_request",
    "container_arguments",
    "environment",
    "input_manifest",
    "validate_request",
]

#: Where SageMaker puts the inputs and collects the outputs inside the container.
INPUT_DIR = "/opt/ml/processing/input/data"
MODEL_DIR = "/opt/ml/processing/input/model"
OUTPUT_DIR = "/opt/ml/processing/output"

_JOB_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
_MAX_INSTANCES = 100
_MAX_RUNTIME = 777_600
_MAX_ENVIRONMENT = 100


class InvalidProcessingRequest(ProcessingRequestRefused):
    """A request SageMaker would refuse, or run wrongly; the message names every bad field."""


def validate_request(request: ProcessingRequest, region: str | None = None) -> SageMakerSpec:
    """The request's SageMaker settings, once every rule holds; else :class:`InvalidProcessingRequest`.

    The fields are named as in the pipeline spec. ``region`` is the job's, when known: SageMaker
    pulls images only from an ECR registry in its own region.
    """
    problems: list[str] = []
    settings: SageMakerSpec | None = None
    if not request.backend_settings:
        problems.append("compute.sagemaker: required by the sagemaker backend (image_uri and role_arn at least)")
    else:
        try:
            settings = SageMakerSpec.model_validate(request.backend_settings)
        except ValidationError as error:
            for item in error.errors():
                where = ".".join(["compute.sagemaker", *(str(part) for part in item["loc"])])
                problems.append(f"{where}: {item['msg'].removeprefix('Value error, ')}")
    problems += _request_problems(request)
    if settings is not None:
        if region and settings.image_region() != region:
            problems.append(
                f"compute.sagemaker.image_uri: the image is in {settings.image_region()} but the job runs in "
                f"{region}; push the image to an ECR repository in the job's region"
            )
        count = len(environment(request, settings, region or ""))
        if count > _MAX_ENVIRONMENT:
            problems.append(f"compute.sagemaker.environment: {count} variables in all; SageMaker allows 100")
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
    if not INSTANCE_TYPE.fullmatch(request.instance_type):
        problems.append(f"compute.instance_type: {request.instance_type!r} is not of the form ml.<family>.<size>")
    if not 1 <= request.instance_count <= _MAX_INSTANCES:
        problems.append(f"compute.instance_count: {request.instance_count}; SageMaker allows 1-{_MAX_INSTANCES}")
    elif request.instance_count > len(request.input_keys):
        problems.append(
            f"compute.instance_count: {request.instance_count} instances for {len(request.input_keys)} input "
            "object(s); an instance without an object is paid for nothing"
        )
    if not 1 <= request.max_runtime_seconds <= _MAX_RUNTIME:
        problems.append(
            f"compute.max_runtime_seconds: {request.max_runtime_seconds}; SageMaker allows 1-{_MAX_RUNTIME}"
        )
    for field, uri, is_prefix in (
        ("input.prefix", request.input_prefix, True),
        ("output.prefix", request.output_prefix, True),
        ("model.uri", request.model_uri, False),
    ):
        try:
            check_s3_uri(uri, prefix=is_prefix)
        except ValueError as error:
            problems.append(f"{field}: {uri!r} {error}")
    prefix_key = request.input_prefix.removeprefix("s3://").partition("/")[2]
    outside = [key for key in request.input_keys if not key.startswith(prefix_key)]
    if outside:
        problems.append(f"input keys: {len(outside)} lie outside {request.input_prefix}, e.g. {outside[0]!r}")
    if not problems:  # the arguments name the model file, so they need a valid model.uri
        too_long = [arg for arg in container_arguments(request) if len(arg) > SAGEMAKER_MAX_ARGUMENT]
        if too_long:
            problems.append(
                f"features/passthrough: {too_long[0][:40]!r}... is longer than the {SAGEMAKER_MAX_ARGUMENT} "
                "characters SageMaker passes in one container argument: leave it out of the spec"
            )
    return problems


def container_arguments(request: ProcessingRequest) -> list[str]:
    """The processing script's command line inside the image (its entrypoint is the script)."""
    model_file = S3Uri.parse(request.model_uri).key.rsplit("/", 1)[-1]
    return [
        "--input-dir",
        INPUT_DIR,
        "--output-dir",
        OUTPUT_DIR,
        "--model-path",
        f"{MODEL_DIR}/{model_file}",
        *request.script_arguments(),
    ]


def environment(request: ProcessingRequest, settings: SageMakerSpec, region: str) -> dict[str, str]:
    """The script's environment: boto3 in the container finds its region only through
    ``AWS_DEFAULT_REGION``; the job id and table it reports to come last, so nothing overrides them."""
    return {"AWS_DEFAULT_REGION": region, **settings.environment, **request.environment}


def input_manifest(request: ProcessingRequest) -> tuple[S3Uri, bytes]:
    """Where the job's input manifest goes and what it holds: SageMaker's ManifestFile format,
    the input prefix and then every key relative to it, so each file keeps its relative path."""
    prefix = S3Uri.parse(request.input_prefix)
    entries: list[Any] = [{"prefix": str(prefix)}]
    entries += sorted(key[len(prefix.key) :] for key in request.input_keys)
    where = S3Uri.parse(request.output_prefix).join("_shardflow", "input-manifests", f"{request.job_name}.json")
    return where, json.dumps(entries, indent=0).encode()


def build_create_request(
    request: ProcessingRequest, settings: SageMakerSpec, region: str, manifest: S3Uri | None = None
) -> dict[str, Any]:
    """The CreateProcessingJob request: the inputs sharded by S3 key over the instances (from the
    prefix, or from ``manifest`` when only some of its objects are to be processed), the model
    copied to every instance, and the outputs uploaded when the job ends."""
    data_source = (
        {"S3Uri": str(manifest), "S3DataType": "ManifestFile"}
        if manifest
        else {"S3Uri": request.input_prefix, "S3DataType": "S3Prefix"}
    )
    cluster: dict[str, Any] = {
        "InstanceCount": request.instance_count,
        "InstanceType": request.instance_type,
        "VolumeSizeInGB": settings.volume_size_gb,
    }
    if settings.volume_kms_key_id:
        cluster["VolumeKmsKeyId"] = settings.volume_kms_key_id
    network: dict[str, Any] = {"EnableNetworkIsolation": settings.network_isolation}
    if settings.subnets:
        network["VpcConfig"] = {"Subnets": settings.subnets, "SecurityGroupIds": settings.security_group_ids}
    body: dict[str, Any] = {
        "ProcessingJobName": request.job_name,
        "ProcessingInputs": [
            {
                "InputName": "data",
                "S3Input": {
                    **data_source,
                    "LocalPath": INPUT_DIR,
                    "S3InputMode": "File",
                    "S3DataDistributionType": "ShardedByS3Key",
                    "S3CompressionType": "None",
                },
            },
            {
                # A key is a prefix too: objects whose keys extend the model's come along, unused.
                "InputName": "model",
                "S3Input": {
                    "S3Uri": request.model_uri,
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
                    "S3Output": {"S3Uri": request.output_prefix, "LocalPath": OUTPUT_DIR, "S3UploadMode": "EndOfJob"},
                }
            ]
        },
        "ProcessingResources": {"ClusterConfig": cluster},
        "StoppingCondition": {"MaxRuntimeInSeconds": request.max_runtime_seconds},
        "AppSpecification": {"ImageUri": settings.image_uri, "ContainerArguments": container_arguments(request)},
        "Environment": environment(request, settings, region),
        "NetworkConfig": network,
        "RoleArn": settings.role_arn,
    }
    if settings.tags:
        body["Tags"] = [{"Key": key, "Value": value} for key, value in sorted(settings.tags.items())]
    return body
