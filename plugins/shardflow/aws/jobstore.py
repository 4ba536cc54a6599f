"""The job store: the only code that reads and writes the DynamoDB job table, and so the only
owner of its item format.

One table holds a job item (``pk=JOB#<id>, sk=JOB``) and one small item per input file
(``sk=FILE#<relative key>``). The job item keeps the job's description nested under ``job``
(a versioned :class:`~shardflow.core.job.JobSpec`) and the attributes the indexes read
(``pipeline``, ``created_at``, ``status``, ``updated_at``) at the top. Every status change is a
write conditioned on the version read. A missing table or a refused access is a named error that
says which table and what to do; botocore's traceback goes to the debug log.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, fields, replace
from datetime import timedelta
from decimal import Decimal
from typing import Any, Concatenate, ParamSpec, TypeVar

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError
from pydantic import ValidationError

from shardflow.aws.job_queries import JOB_KIND, JobPage, JobQuery, query_jobs
from shardflow.core.job import JOB_SPEC_VERSION, JobSpec
from shardflow.core.record import ErrorKind, FileRecord, FileStatus, JobRecord, JobStatus, check_transition, utcnow
from shardflow.errors import AccessDenied, JobConflict, JobNotFound, JobTableNotFound, ResourceError, ShardflowError

__all__ = ["JobStore", "job_from_item", "job_id_of_item", "job_key"]

_JOB_SK = "JOB"
_FILE_SK = "FILE#"
_JOB_PK = "JOB#"
_RETENTION = timedelta(days=90)


log = logging.getLogger(__name__)
_DENIED = {"AccessDeniedException", "UnrecognizedClientException", "InvalidSignatureException"}
_P = ParamSpec("_P")
_R = TypeVar("_R")

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()
_JOB_FIELDS = {f.name for f in fields(JobRecord)}


def _to_item(values: Mapping[str, Any]) -> dict[str, Any]:
    return {
        k: _serializer.serialize(Decimal(str(v)) if isinstance(v, float) else v)
        for k, v in values.items()
        if v is not None
    }


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


def job_from_item(item: Mapping[str, Any]) -> JobRecord:
    """Decode a job item as returned by a low-level DynamoDB client (sync or async)."""
    values = {k: v for k, v in _from_item(item).items() if k in _JOB_FIELDS}
    job = values.get("job") or {}
    if job.get("version") != JOB_SPEC_VERSION:
        raise ShardflowError(
            f"job {values.get('job_id')!r} was written with job description version {job.get('version')!r}; "
            f"this Shardflow reads version {JOB_SPEC_VERSION}: run the Shardflow version that wrote it"
        )
    try:
        values["job"] = JobSpec.model_validate(job)
    except ValidationError as error:
        raise ShardflowError(f"job {values.get('job_id')!r}: its stored description is invalid:\n{error}") from None
    values["status"] = JobStatus(values["status"])
    values["processing_jobs"] = list(values.get("processing_jobs", []))
    values["refused_files"] = list(values.get("refused_files", []))
    return JobRecord(**values)


def job_key(job_id: str) -> dict[str, Any]:
    return {"pk": {"S": _JOB_PK + job_id}, "sk": {"S": _JOB_SK}}


def job_id_of_item(item: Mapping[str, Any]) -> str:
    """The job id of a job item, from its key."""
    return str(item["pk"]["S"][len(_JOB_PK) :])


def _job_item(record: JobRecord) -> dict[str, Any]:
    values = {**asdict(record), "job": record.job.model_dump(mode="json"), "pipeline": record.pipeline}
    return {**_to_item(values), "kind": {"S": JOB_KIND}}


#: The table's indexes: name -> (partition key, sort key). Newest first in each.
_INDEXES = {
    "by_pipeline": ("pipeline", "created_at"),
    "by_status": ("status", "updated_at"),
    "by_created": ("kind", "created_at"),
}


def _index(name: str, keys: tuple[str, str]) -> dict[str, Any]:
    return {
        "IndexName": name,
        "KeySchema": [{"AttributeName": keys[0], "KeyType": "HASH"}, {"AttributeName": keys[1], "KeyType": "RANGE"}],
        "Projection": {"ProjectionType": "ALL"},
    }


def _file_from_item(item: Mapping[str, Any]) -> FileRecord:
    values = _from_item(item)
    return FileRecord(
        key=values["sk"][len(_FILE_SK) :],
        size=values.get("size", 0),
        status=FileStatus(values.get("file_status", FileStatus.PENDING)),
        rows=values.get("rows", 0),
        output_key=values.get("output_key"),
        error=values.get("error"),
        processing_job=values.get("processing_job"),
        seconds=float(values["seconds"]) if "seconds" in values else None,
        error_kind=ErrorKind(values["error_kind"]) if "error_kind" in values else None,
    )


def _named_faults(method: Callable[Concatenate[JobStore, _P], _R]) -> Callable[Concatenate[JobStore, _P], _R]:
    """A missing table or refused access, raised as the named error; any other fault unchanged."""

    @functools.wraps(method)
    def call(store: JobStore, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return method(store, *args, **kwargs)
        except ClientError as error:
            named = store.named_error(error)
            if named is None:
                raise
            log.debug("job table %s refused %s", store.table, method.__name__, exc_info=error)
            raise named from None

    return call


class JobStore:
    """The job table behind one small class.

    :param client: a low-level boto3 DynamoDB client (``boto3.client("dynamodb")`` or an
        Airflow ``AwsBaseHook(client_type="dynamodb").get_conn()``).
    :param table: the table name.
    """

    def __init__(self, client: Any, table: str) -> None:
        self.client = client
        self.table = table

    def named_error(self, error: ClientError) -> ResourceError | None:
        """The named error for DynamoDB's ``error`` on this table, or ``None`` for other faults."""
        code = str(error.response.get("Error", {}).get("Code", ""))
        region = getattr(getattr(self.client, "meta", None), "region_name", None) or "the configured region"
        if code == "ResourceNotFoundException":
            return JobTableNotFound(
                f"job table {self.table!r} does not exist in {region}: create it (infra/ has its CloudFormation), "
                "or name the right one (SHARDFLOW_JOB_TABLE, or --table for the shardflow command)"
            )
        if code in _DENIED:
            return AccessDenied(
                f"access denied to job table {self.table!r} in {region} ({code}): give the credentials in use "
                "dynamodb:GetItem, PutItem, UpdateItem, Query and BatchWriteItem on it"
            )
        return None

    def create_table(self) -> None:
        """Create the table and its indexes (production uses ``infra/``; this is for local stacks)."""
        attributes = [
            {"AttributeName": name, "AttributeType": "S"}
            for name in ("pk", "sk", "pipeline", "created_at", "status", "updated_at", "kind")
        ]
        try:
            self.client.create_table(
                TableName=self.table,
                BillingMode="PAY_PER_REQUEST",
                KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
                AttributeDefinitions=attributes,
                GlobalSecondaryIndexes=[_index(name, keys) for name, keys in _INDEXES.items()],
            )
        except ClientError as error:
            if error.response["Error"]["Code"] != "ResourceInUseException":
                raise
        self.client.get_waiter("table_exists").wait(TableName=self.table)
        # A table made by an older Shardflow lacks the newer indexes: add them.
        present = {
            i["IndexName"]
            for i in self.client.describe_table(TableName=self.table)["Table"].get("GlobalSecondaryIndexes", [])
        }
        for name in _INDEXES.keys() - present:
            self.client.update_table(
                TableName=self.table,
                AttributeDefinitions=attributes,
                GlobalSecondaryIndexUpdates=[{"Create": _index(name, _INDEXES[name])}],
            )
        if "by_created" not in present:
            self._add_kind()
        self.client.update_time_to_live(
            TableName=self.table, TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires_at"}
        )

    def _add_kind(self) -> None:
        """Put the ``by_created`` index's key on job items written before it existed: a one-time
        migration, and the only Scan of the table."""
        paginator = self.client.get_paginator("scan")
        pages = paginator.paginate(
            TableName=self.table,
            FilterExpression="sk = :job AND attribute_not_exists(kind)",
            ExpressionAttributeValues={":job": {"S": _JOB_SK}},
            ProjectionExpression="pk, sk",
        )
        for item in (item for page in pages for item in page["Items"]):
            self.client.update_item(
                TableName=self.table,
                Key={"pk": item["pk"], "sk": item["sk"]},
                UpdateExpression="SET kind = :kind",
                ExpressionAttributeValues={":kind": {"S": JOB_KIND}},
            )

    # -- jobs ---------------------------------------------------------------------------------

    @_named_faults
    def create_job(self, record: JobRecord, files: Iterable[FileRecord]) -> JobRecord:
        """Write a new job and its file list; if the job exists already, return it unchanged (its
        files' results included: a prepare run again must not send finished files back to PENDING)."""
        existing = self.client.get_item(TableName=self.table, Key=job_key(record.job_id), ConsistentRead=True)
        if "Item" in existing:
            return job_from_item(existing["Item"])
        now = utcnow()
        record = replace(record, created_at=now, updated_at=now, version=1)
        files = list(files)
        record = replace(record, files_total=len(files))
        expires_at = int(time.time() + _RETENTION.total_seconds())
        item = {**_job_item(record), **job_key(record.job_id), "expires_at": {"N": str(expires_at)}}
        # File items go first: a job item that exists always has its complete file list. Two
        # prepares racing here write the same PENDING items; only one job item is created.
        self._batch_put([self._file_item(record.job_id, f, expires_at) for f in files])
        try:
            self.client.put_item(TableName=self.table, Item=item, ConditionExpression="attribute_not_exists(pk)")
        except ClientError as error:
            if error.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise
            return self.get_job(record.job_id)
        return record

    @_named_faults
    def get_job(self, job_id: str) -> JobRecord:
        response = self.client.get_item(TableName=self.table, Key=job_key(job_id), ConsistentRead=True)
        if "Item" not in response:
            raise JobNotFound(f"no job {job_id!r} in table {self.table!r}")
        return job_from_item(response["Item"])

    @_named_faults
    def transition(self, record: JobRecord, to: JobStatus, **changes: Any) -> JobRecord:
        """Move ``record`` to status ``to``, writing ``changes`` with it, if nobody else wrote first.

        :raises IllegalTransition: ``record.status -> to`` is not in :data:`TRANSITIONS`.
        :raises JobConflict: the stored job is no longer at ``record.version``.
        """
        check_transition(record.job_id, record.status, to)
        unknown = set(changes) - (_JOB_FIELDS - {"job", "job_id"})
        if unknown:
            raise TypeError(f"not job fields: {sorted(unknown)}")
        now = utcnow()
        values: dict[str, Any] = {**changes, "status": str(to), "updated_at": now, "version": record.version + 1}
        if to in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED):
            values.setdefault("finished_at", now)
        names = {f"#f{i}": name for i, name in enumerate(values)}
        sets = [f"#f{i} = :v{i}" for i, value in enumerate(values.values()) if value is not None]
        removes = [f"#f{i}" for i, value in enumerate(values.values()) if value is None]
        placeholders = {f":v{i}": value for i, value in enumerate(values.values()) if value is not None}
        try:
            self.client.update_item(
                TableName=self.table,
                Key=job_key(record.job_id),
                UpdateExpression="SET " + ", ".join(sets) + (" REMOVE " + ", ".join(removes) if removes else ""),
                ConditionExpression="#version = :expected AND #status = :from",
                ExpressionAttributeNames={**names, "#version": "version", "#status": "status"},
                ExpressionAttributeValues={
                    **_to_item(placeholders),
                    ":expected": {"N": str(record.version)},
                    ":from": {"S": str(record.status)},
                },
            )
        except ClientError as error:
            if error.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise
            current = self.get_job(record.job_id)
            raise JobConflict(
                f"job {record.job_id} changed since it was read at version {record.version} "
                f"({record.status}); it is now {current.status} at version {current.version}. "
                "Re-read the job and decide again."
            ) from None
        return replace(record, **{k: v for k, v in values.items() if k != "status"}, status=to)

    @_named_faults
    def heartbeat(self, job_id: str, attempt: int, files: int = 0, rows: int = 0) -> bool:
        """Say the attempt's script is alive and add the files and rows it finished since the last
        beat. Not a status change, so the version stays. An attempt that is no longer the job's
        current one is refused (``False``): its progress must not count for the next."""
        try:
            self.client.update_item(
                TableName=self.table,
                Key=job_key(job_id),
                UpdateExpression="SET heartbeat_at = :now ADD progress_files :files, progress_rows :rows",
                ConditionExpression="attempt = :attempt",
                ExpressionAttributeValues={
                    ":now": {"S": utcnow()},
                    ":files": {"N": str(files)},
                    ":rows": {"N": str(rows)},
                    ":attempt": {"N": str(attempt)},
                },
            )
        except ClientError as error:
            if error.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise
            return False
        return True

    @_named_faults
    def query_jobs(self, query: JobQuery) -> JobPage:
        """One page of jobs, newest first, from one Query on an index (:mod:`shardflow.aws.job_queries`)."""
        return query_jobs(self.client, self.table, query, job_from_item)

    def list_jobs(
        self, pipeline: str | None = None, status: JobStatus | None = None, limit: int = 50
    ) -> list[JobRecord]:
        """The first page of a pipeline's jobs, of the jobs in a status, or of every job."""
        return self.query_jobs(JobQuery(pipeline=pipeline, status=status, limit=limit)).jobs

    # -- files --------------------------------------------------------------------------------

    @_named_faults
    def list_files(self, job_id: str) -> list[FileRecord]:
        return [_file_from_item(item) for item in self._query_files(job_id)]

    @_named_faults
    def record_file_results(self, job_id: str, results: Iterable[FileRecord]) -> None:
        """Store per-file outcomes in batches of 25 (one BatchWriteItem each), never per row."""
        expires_at = int(time.time() + _RETENTION.total_seconds())
        self._batch_put([self._file_item(job_id, result, expires_at) for result in results])

    def _query_files(self, job_id: str) -> Iterator[dict[str, Any]]:
        paginator = self.client.get_paginator("query")
        for page in paginator.paginate(
            TableName=self.table,
            ConsistentRead=True,
            KeyConditionExpression="pk = :pk AND begins_with(sk, :file)",
            ExpressionAttributeValues={":pk": {"S": _JOB_PK + job_id}, ":file": {"S": _FILE_SK}},
        ):
            yield from page["Items"]

    @staticmethod
    def _file_item(job_id: str, record: FileRecord, expires_at: int) -> dict[str, Any]:
        values = {
            "size": record.size,
            "file_status": str(record.status),
            "rows": record.rows,
            "output_key": record.output_key,
            "error": record.error,
            "processing_job": record.processing_job,
            "seconds": None if record.seconds is None else round(record.seconds, 3),
            "error_kind": None if record.error_kind is None else str(record.error_kind),
            "updated_at": utcnow(),
        }
        return {
            "pk": {"S": _JOB_PK + job_id},
            "sk": {"S": _FILE_SK + record.key},
            "expires_at": {"N": str(expires_at)},
            **_to_item({k: v for k, v in values.items() if k != "updated_at"}),
            # Not "updated_at": file items must stay out of the sparse by_status index.
            "file_updated_at": {"S": values["updated_at"]},
        }

    def _batch_put(self, items: list[dict[str, Any]]) -> None:
        for start in range(0, len(items), 25):
            pending = [{"PutRequest": {"Item": item}} for item in items[start : start + 25]]
            delay = 0.05
            while pending:
                response = self.client.batch_write_item(RequestItems={self.table: pending})
                pending = response.get("UnprocessedItems", {}).get(self.table, [])
                if pending:
                    time.sleep(delay)
                    delay = min(delay * 2, 2.0)
