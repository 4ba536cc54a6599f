"""The job table's item format: how a :class:`~shardflow.core.record.JobRecord` and its
:class:`~shardflow.core.record.FileRecord` items are written to DynamoDB and read back.

One table holds a job item (``pk=JOB#<id>, sk=JOB``) and one small item per input file
(``sk=FILE#<relative key>``). The job item keeps the job's description nested under ``job``
(a versioned :class:`~shardflow.core.job.JobSpec`), its attempts as a list of maps under
``attempts``, and the attributes the indexes read (``pipeline``, ``created_at``, ``status``,
``updated_at``, ``kind``) at the top. Only :mod:`shardflow.aws.jobstore` and the triggers' reader
use this module.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, fields
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from pydantic import ValidationError

from shardflow.aws.job_queries import JOB_KIND
from shardflow.core.artifact import ModelArtifact
from shardflow.core.job import READABLE_JOB_SPEC_VERSIONS, JobSpec
from shardflow.core.record import AttemptRecord, ErrorKind, FileRecord, FileStatus, JobRecord, JobStatus, utcnow
from shardflow.errors import ShardflowError

__all__ = [
    "FILE_SK",
    "JOB_FIELDS",
    "JOB_PK",
    "JOB_SK",
    "file_from_item",
    "file_item",
    "job_from_item",
    "job_id_of_item",
    "job_item",
    "job_key",
    "to_item",
]

JOB_SK = "JOB"
FILE_SK = "FILE#"
JOB_PK = "JOB#"
JOB_FIELDS = frozenset(f.name for f in fields(JobRecord))
_ATTEMPT_FIELDS = frozenset(f.name for f in fields(AttemptRecord))

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


def _number(value: Any) -> Any:
    if isinstance(value, float):
        return Decimal(str(value))
    if isinstance(value, dict):
        return {k: _number(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_number(v) for v in value]
    return value


def to_item(values: Mapping[str, Any]) -> dict[str, Any]:
    """Attribute values for DynamoDB's low-level API; ``None`` values are left out, at any depth."""
    return {k: _serializer.serialize(_number(v)) for k, v in values.items() if v is not None}


def _plain(value: Any) -> Any:
    """DynamoDB numbers come back as Decimal, at any depth; our records hold ints and floats."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _from_item(item: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _plain(_deserializer.deserialize(v)) for k, v in item.items()}


def attempts_from_values(values: list[Mapping[str, Any]]) -> list[AttemptRecord]:
    attempts = []
    for value in values:
        known = {k: v for k, v in value.items() if k in _ATTEMPT_FIELDS}
        if known.get("status") is not None:
            known["status"] = JobStatus(known["status"])
        attempts.append(AttemptRecord(**known))
    return attempts


def job_from_item(item: Mapping[str, Any]) -> JobRecord:
    """Decode a job item as returned by a low-level DynamoDB client (sync or async)."""
    values = {k: v for k, v in _from_item(item).items() if k in JOB_FIELDS}
    job = values.get("job") or {}
    if job.get("version") not in READABLE_JOB_SPEC_VERSIONS:
        raise ShardflowError(
            f"job {values.get('job_id')!r} was written with job description version {job.get('version')!r}; "
            f"this Shardflow reads versions {', '.join(map(str, READABLE_JOB_SPEC_VERSIONS))}: "
            "run the Shardflow version that wrote it"
        )
    try:
        values["job"] = JobSpec.model_validate(job)
    except ValidationError as error:
        raise ShardflowError(f"job {values.get('job_id')!r}: its stored description is invalid:\n{error}") from None
    values["status"] = JobStatus(values["status"])
    values["processing_jobs"] = list(values.get("processing_jobs", []))
    values["refused_files"] = list(values.get("refused_files", []))
    values["attempts"] = attempts_from_values(values.get("attempts", []))
    if values.get("model") is not None:
        values["model"] = ModelArtifact.model_validate(values["model"])
    return JobRecord(**values)


def job_key(job_id: str) -> dict[str, Any]:
    return {"pk": {"S": JOB_PK + job_id}, "sk": {"S": JOB_SK}}


def job_id_of_item(item: Mapping[str, Any]) -> str:
    """The job id of a job item, from its key."""
    return str(item["pk"]["S"][len(JOB_PK) :])


def job_item(record: JobRecord) -> dict[str, Any]:
    values = {
        **asdict(record),
        "job": record.job.model_dump(mode="json"),
        "model": None if record.model is None else record.model.model_dump(mode="json"),
        "pipeline": record.pipeline,
    }
    return {**to_item(values), "kind": {"S": JOB_KIND}}


def file_from_item(item: Mapping[str, Any]) -> FileRecord:
    values = _from_item(item)
    status = FileStatus(values.get("file_status", FileStatus.PENDING))
    return FileRecord(
        key=values["sk"][len(FILE_SK) :],
        size=values.get("size", 0),
        status=status,
        rows=values.get("rows", 0),
        output_key=values.get("output_key"),
        error=values.get("error"),
        processing_job=values.get("processing_job"),
        seconds=float(values["seconds"]) if "seconds" in values else None,
        error_kind=ErrorKind(values["error_kind"]) if "error_kind" in values else None,
        # A file's result is written when it ends: that write's time is when it finished.
        finished_at=values.get("file_updated_at") if status is not FileStatus.PENDING else None,
        parts=int(values.get("parts", 1)),
    )


def file_item(job_id: str, record: FileRecord, expires_at: int) -> dict[str, Any]:
    values = {
        "size": record.size,
        "file_status": str(record.status),
        "rows": record.rows,
        "output_key": record.output_key,
        "error": record.error,
        "processing_job": record.processing_job,
        "seconds": None if record.seconds is None else round(record.seconds, 3),
        "error_kind": None if record.error_kind is None else str(record.error_kind),
        "parts": record.parts if record.parts != 1 else None,
    }
    return {
        "pk": {"S": JOB_PK + job_id},
        "sk": {"S": FILE_SK + record.key},
        "expires_at": {"N": str(expires_at)},
        **to_item(values),
        # Not "updated_at": file items must stay out of the sparse by_status index.
        "file_updated_at": {"S": record.finished_at or utcnow()},
    }
