"""Pages of jobs, newest first, from one Query on one of the job table's indexes (never a Scan):
``by_pipeline`` for a pipeline, ``by_status`` for a status, ``by_created`` for every job. The
cursor is DynamoDB's ``LastEvaluatedKey``, handed out as an opaque string."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from shardflow.core.record import JobRecord, JobStatus
from shardflow.errors import ShardflowError

__all__ = ["JOB_KIND", "JobPage", "JobQuery", "query_jobs"]

#: Every job item carries ``kind = JOB``: the partition key of the ``by_created`` index.
JOB_KIND = "JOB"


class BadCursor(ShardflowError, ValueError):
    """A page cursor this table did not hand out."""


@dataclass(frozen=True)
class JobQuery:
    """Which jobs, newest first.

    :param pipeline: only this pipeline's jobs.
    :param status: only jobs in this status (with ``pipeline``, checked by a filter).
    :param since: only jobs created on or after this day.
    :param until: only jobs created before the end of this day.
    :param limit: jobs per page, 1 to 200.
    :param cursor: where the previous page ended (:attr:`JobPage.cursor`).
    """

    pipeline: str | None = None
    status: JobStatus | None = None
    since: date | None = None
    until: date | None = None
    limit: int = 50
    cursor: str | None = None


@dataclass(frozen=True)
class JobPage:
    """:param cursor: pass it back for the next page; ``None`` on the last one."""

    jobs: list[JobRecord]
    cursor: str | None


def _time_key(day: date, end: bool = False) -> str:
    """The first instant of ``day`` or, with ``end``, its last (times are kept to the microsecond)."""
    moment = datetime(day.year, day.month, day.day) + (timedelta(days=1, microseconds=-1) if end else timedelta())
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _encode(key: dict[str, Any] | None) -> str | None:
    return base64.urlsafe_b64encode(json.dumps(key).encode()).decode() if key else None


def _decode(cursor: str) -> dict[str, Any]:
    try:
        key = json.loads(base64.urlsafe_b64decode(cursor.encode()))
    except ValueError:
        raise BadCursor(
            f"cursor {cursor[:40]!r} is not one this job table handed out: start from the first page"
        ) from None
    if not isinstance(key, dict):
        raise BadCursor("the cursor is not one this job table handed out: start from the first page")
    return key


def query_jobs(client: Any, table: str, query: JobQuery, decode: Any) -> JobPage:
    """One page of jobs for ``query``, from one Query call. ``decode`` turns an item into a record."""
    if not 1 <= query.limit <= 200:
        raise ShardflowError(f"limit {query.limit}: ask for 1 to 200 jobs a page")
    names: dict[str, str] = {}
    values: dict[str, Any] = {}
    filters: list[str] = []
    if query.pipeline is not None:
        index, key, sort = "by_pipeline", ("pipeline", query.pipeline), "created_at"
        if query.status is not None:
            filters.append("#status = :status")
            names["#status"] = "status"
            values[":status"] = {"S": str(query.status)}
    elif query.status is not None:
        index, key, sort = "by_status", ("status", str(query.status)), "updated_at"
    else:
        index, key, sort = "by_created", ("kind", JOB_KIND), "created_at"
    names["#key"], values[":key"] = key[0], {"S": key[1]}
    condition = "#key = :key"
    bounds = {":since": query.since and _time_key(query.since), ":until": query.until and _time_key(query.until, True)}
    # The index's own sort key bounds the range; by_status sorts by updated_at, so creation is a filter.
    column = "#sort" if sort == "created_at" else "#created"
    names["#sort" if sort == "created_at" else "#created"] = "created_at"
    ranges = [f"{column} >= :since" if bounds[":since"] else "", f"{column} < :until" if bounds[":until"] else ""]
    ranges = [r for r in ranges if r]
    if sort == "created_at":
        if len(ranges) == 2:
            condition += f" AND {column} BETWEEN :since AND :until"
        elif ranges:
            condition += " AND " + ranges[0]
    else:
        filters += ranges
    values.update({name: {"S": value} for name, value in bounds.items() if value})
    if not any(column in part for part in [condition, *filters]):
        names.pop(column)
    request: dict[str, Any] = {
        "TableName": table,
        "IndexName": index,
        "KeyConditionExpression": condition,
        "ExpressionAttributeNames": names,
        "ExpressionAttributeValues": values,
        "ScanIndexForward": False,
        "Limit": query.limit,
    }
    if filters:
        request["FilterExpression"] = " AND ".join(filters)
    if query.cursor:
        request["ExclusiveStartKey"] = _decode(query.cursor)
    response = client.query(**request)
    return JobPage([decode(item) for item in response["Items"]], _encode(response.get("LastEvaluatedKey")))
