"""Job descriptions and records as prepare would write them, for tests and benchmarks."""

from __future__ import annotations

from typing import Any

from shardflow.core.job import ComputeSpec, JobInput, JobOutput, JobSpec, ModelSpec, RetrySpec
from shardflow.core.ports import ProcessingRequest
from shardflow.core.record import JobRecord
from shardflow.core.sagemaker_settings import SageMakerSpec

__all__ = ["IMAGE", "ROLE", "sample_job", "sample_job_spec", "sample_request", "unchecked_job_spec"]

IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/shardflow-processing:0.1.0"
ROLE = "arn:aws:iam::123456789012:role/service-role/shardflow-dev-processing"


def sample_job_spec(job_id: str = "demo-000000000001", bucket: str = "shardflow-demo", **changes: Any) -> JobSpec:
    """A job description; ``changes`` name its settings flat (``model_uri``, ``instance_count``,
    ``sagemaker``, ...). The sagemaker backend gets a valid image and role unless given."""
    pipeline = changes.pop("pipeline", job_id.rsplit("-", 1)[0])
    backend = changes.pop("backend", "local")
    sagemaker = changes.pop("sagemaker", {"image_uri": IMAGE, "role_arn": ROLE} if backend == "sagemaker" else None)
    return JobSpec.model_validate(_job_data(pipeline, backend, sagemaker, bucket, changes))


def _job_data(pipeline: str, backend: str, sagemaker: Any, bucket: str, changes: dict[str, Any]) -> dict[str, Any]:
    data = {
        "pipeline": pipeline,
        "dag_id": changes.pop("dag_id", "shardflow_" + pipeline),
        "run_id": changes.pop("run_id", "manual__1"),
        "model": {
            "uri": changes.pop("model_uri", f"s3://{bucket}/models/model.joblib"),
            "sha256": changes.pop("model_sha256", "ab" * 32),
        },
        "input": {
            "prefix": changes.pop("input_prefix", f"s3://{bucket}/events/"),
            "format": changes.pop("input_format", "parquet"),
        },
        "output": {
            "prefix": changes.pop("output_prefix", f"s3://{bucket}/scores/"),
            "format": changes.pop("output_format", "parquet"),
            "probability": changes.pop("probability", "one"),
            "overwrite": changes.pop("overwrite", False),
        },
        "compute": {
            "backend": backend,
            "instance_type": changes.pop("instance_type", "ml.m5.xlarge"),
            "instance_count": changes.pop("instance_count", 2),
            "max_runtime_seconds": changes.pop("max_runtime_seconds", 3600),
            "distribution": changes.pop("distribution", "sharded"),
            "split_objects": changes.pop("split_objects", False),
            "lease_seconds": changes.pop("lease_seconds", 60),
            "sagemaker": sagemaker,
        },
        "features": changes.pop("features", None),
        "passthrough": changes.pop("passthrough", None),
        "retries": {
            "max_attempts": changes.pop("max_attempts", 3),
            "backoff_seconds": changes.pop("backoff_seconds", 30),
        },
        "heartbeat_timeout_seconds": changes.pop("heartbeat_timeout_seconds", 600),
    }
    if changes:
        raise TypeError(f"not job settings: {sorted(changes)}")
    return data


def unchecked_job_spec(job_id: str = "demo-000000000001", bucket: str = "shardflow-demo", **changes: Any) -> JobSpec:
    """As :func:`sample_job_spec`, but nothing is checked: a description as a stale or tampered
    record could hold it, to show that what reads it checks again."""
    pipeline = changes.pop("pipeline", job_id.rsplit("-", 1)[0])
    backend = changes.pop("backend", "local")
    sagemaker = changes.pop("sagemaker", {"image_uri": IMAGE, "role_arn": ROLE} if backend == "sagemaker" else None)
    data = _job_data(pipeline, backend, sagemaker, bucket, changes)
    compute = data["compute"]
    return JobSpec.model_construct(
        **{
            **data,
            "model": ModelSpec.model_construct(**data["model"]),
            "input": JobInput.model_construct(**data["input"]),
            "output": JobOutput.model_construct(**data["output"]),
            "compute": ComputeSpec.model_construct(
                **{**compute, "sagemaker": SageMakerSpec.model_construct(**sagemaker) if sagemaker else None}
            ),
            "retries": RetrySpec.model_construct(**data["retries"]),
            "features": tuple(data["features"]) if data["features"] is not None else None,
            "passthrough": tuple(data["passthrough"]) if data["passthrough"] is not None else None,
        }
    )


def sample_request(
    job: JobSpec,
    job_name: str,
    input_keys: tuple[str, ...],
    *,
    job_id: str | None = None,
    job_table: str = "shardflow-jobs",
    attempt: int = 1,
    instance_count: int | None = None,
) -> ProcessingRequest:
    """One attempt of ``job`` over ``input_keys`` on the job's instance count unless given; the
    job id defaults to the name without its attempt."""
    return ProcessingRequest(
        job=job,
        job_id=job_id or job_name.rsplit("-a", 1)[0],
        job_table=job_table,
        attempt=attempt,
        job_name=job_name,
        input_keys=tuple(input_keys),
        instance_count=job.compute.instance_count if instance_count is None else instance_count,
    )


def sample_job(job_id: str = "demo-000000000001", bucket: str = "shardflow-demo", **changes: Any) -> JobRecord:
    """A job record as prepare would write it; ``changes`` set the job's settings (as in
    :func:`sample_job_spec`) and the record's own fields (``status``, ``attempt``, ...)."""
    record_fields = set(JobRecord.__dataclass_fields__) - {"job", "job_id"}
    record_changes = {k: changes.pop(k) for k in list(changes) if k in record_fields}
    return JobRecord(job_id=job_id, job=sample_job_spec(job_id, bucket, **changes), **record_changes)
