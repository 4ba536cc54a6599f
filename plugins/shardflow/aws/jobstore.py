"""The job store: the only code that reads and writes the DynamoDB job table, and so the only
owner of its item format.

The item format is :mod:`shardflow.aws.job_items`'s. Every status change is a
write conditioned on the version read. A missing table or a refused access is a named error that
says which table and what to do; botocore's traceback goes to the debug log.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, replace
from datetime import timedelta
from typing import Any, Concatenate, ParamSpec, TypeVar

from botocore.exceptions import ClientError

from shardflow.aws.job_items import (
    FILE_SK,
    JOB_FIELDS,
    JOB_SK,
    file_from_item,
    file_item,
    job_from_item,
    job_item,
    job_key,
    to_item,
)
from shardflow.aws.job_queries import JOB_KIND, JobPage, JobQuery, query_jobs
from shardflow.aws.job_units import CURRENT_ATTEMPT, UnitMethods, current_attempt_values, fence, unit_item
from shardflow.core.record import FileRecord, JobRecord, JobStatus, attempts_after, check_transition, utcnow
from shardflow.core.units import Claim, WorkUnit
from shardflow.errors import AccessDenied, JobConflict, JobNotFound, JobTableNotFound, ResourceError

__all__ = ["JobStore"]

_RETENTION = timedelta(days=90)


log = logging.getLogger(__name__)
_DENIED = {"AccessDeniedException", "UnrecognizedClientException", "InvalidSignatureException"}
_P = ParamSpec("_P")
_R = TypeVar("_R")

#: DynamoDB allows 100 actions per transaction; one is the fence's ConditionCheck.
_FILES_PER_TRANSACTION = 99
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


class JobStore(UnitMethods):
    """The job table behind one small class (the unit items' operations: :mod:`shardflow.aws.job_units`).

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
                "dynamodb:GetItem, PutItem, UpdateItem, Query, BatchWriteItem and ConditionCheckItem on it"
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
            ExpressionAttributeValues={":job": {"S": JOB_SK}},
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
    def create_job(self, record: JobRecord, files: Iterable[FileRecord], units: Iterable[WorkUnit] = ()) -> JobRecord:
        """Write a new job, its file list and its work units (dynamic distribution); if the job
        exists already, return it unchanged (its files' results included: a prepare run again must
        not send finished files back to PENDING)."""
        existing = self.client.get_item(TableName=self.table, Key=job_key(record.job_id), ConsistentRead=True)
        if "Item" in existing:
            return job_from_item(existing["Item"])
        now = utcnow()
        record = replace(record, created_at=now, updated_at=now, version=1)
        files = list(files)
        record = replace(record, files_total=len(files))
        expires_at = int(time.time() + _RETENTION.total_seconds())
        item = {**job_item(record), **job_key(record.job_id), "expires_at": {"N": str(expires_at)}}
        # File items go first: a job item that exists always has its complete file list. Two
        # prepares racing here write the same PENDING items; only one job item is created.
        self._batch_put([file_item(record.job_id, f, expires_at) for f in files])
        self._batch_put([unit_item(record.job_id, u, expires_at) for u in units])
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
        unknown = set(changes) - (JOB_FIELDS - {"job", "job_id"})
        if unknown:
            raise TypeError(f"not job fields: {sorted(unknown)}")
        now = utcnow()
        values: dict[str, Any] = {**changes, "status": str(to), "updated_at": now, "version": record.version + 1}
        if to in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED):
            values.setdefault("finished_at", now)
        attempts = attempts_after(record, to, changes, now)
        if attempts != record.attempts:
            values["attempts"] = [asdict(attempt) for attempt in attempts]
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
                    **to_item(placeholders),
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
        kept = {k: v for k, v in values.items() if k not in ("status", "attempts")}
        return replace(record, **kept, status=to, attempts=attempts)

    @_named_faults
    def heartbeat(self, job_id: str, attempt: int, files: int = 0, rows: int = 0) -> bool:
        """Say the attempt's script is alive and add the files and rows it finished since the last
        beat. Not a status change, so the version stays. An attempt that is no longer the job's
        current, active one is refused (``False``): its progress must not count for the next."""
        try:
            self.client.update_item(
                TableName=self.table,
                Key=job_key(job_id),
                UpdateExpression="SET heartbeat_at = :now ADD progress_files :files, progress_rows :rows",
                ConditionExpression=CURRENT_ATTEMPT,
                ExpressionAttributeNames={"#status": "status"},
                ExpressionAttributeValues={
                    ":now": {"S": utcnow()},
                    ":files": {"N": str(files)},
                    ":rows": {"N": str(rows)},
                    **current_attempt_values(attempt),
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
        return [file_from_item(item) for item in self._query_items(job_id, FILE_SK)]

    @_named_faults
    def record_file_results(self, job_id: str, results: Iterable[FileRecord], attempt: int | None = None) -> bool:
        """Store per-file outcomes in batches, never per row.

        With ``attempt`` (every write by a processing attempt, and the lifecycle's on its behalf)
        the writes are fenced: each batch of up to 99 files is one TransactWriteItems whose
        ConditionCheck says the job is still at that attempt, SUBMITTED or RUNNING. A superseded
        or settled attempt's results are refused whole and logged (``False``), never applied, so
        a stale writer cannot overwrite what a newer attempt recorded. Without ``attempt`` (the
        prepare step's file list) batches of 25 go through BatchWriteItem.
        """
        expires_at = int(time.time() + _RETENTION.total_seconds())
        # One transaction may not touch an item twice: the last result of a key wins.
        items = list({r.key: file_item(job_id, r, expires_at) for r in results}.values())
        if attempt is None:
            self._batch_put(items)
            return True
        for start in range(0, len(items), _FILES_PER_TRANSACTION):
            if not self._fenced_put(job_id, attempt, items[start : start + _FILES_PER_TRANSACTION]):
                log.warning(
                    "job %s is no longer at attempt %d (or has settled): refused %d file result(s) of that attempt",
                    job_id,
                    attempt,
                    len(items) - start,
                )
                return False
        return True

    def _fenced_put(self, job_id: str, attempt: int, items: list[dict[str, Any]]) -> bool:
        """Put ``items`` in one transaction with the attempt's fence; ``False`` when the fence holds."""
        puts = [{"Put": {"TableName": self.table, "Item": item}} for item in items]
        return self._transaction([fence(self.table, job_id, attempt), *puts]) is Claim.OK

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
