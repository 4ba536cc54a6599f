"""The job table's unit items (dynamic distribution, :mod:`shardflow.core.units`): how they are
written, read, claimed, renewed and finished.

One item per unit under the job's key (``sk=UNIT#<index>``), beside the file items. Every claim
and every result is one TransactWriteItems whose first action is the attempt's fence (the job is
still at that attempt, SUBMITTED or RUNNING); a claim's condition is the unit's own state
(:meth:`~shardflow.core.units.WorkUnit.claimable`), and a result's is the claim's token, so the
result of an instance whose unit was claimed again after its lease ran out is refused.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from botocore.exceptions import ClientError

from shardflow.aws.job_items import JOB_PK, file_item, job_key, to_item
from shardflow.core.record import ErrorKind, FileRecord, FileStatus, JobStatus
from shardflow.core.units import Claim, UnitState, WorkUnit

__all__ = [
    "CURRENT_ATTEMPT",
    "UNIT_SK",
    "UnitMethods",
    "current_attempt_values",
    "fence",
    "unit_from_item",
    "unit_item",
]

UNIT_SK = "UNIT#"

#: The fence on an attempt's writes: the job is still at that attempt, and the attempt is active.
CURRENT_ATTEMPT = "attempt = :attempt AND #status IN (:submitted, :running)"


def current_attempt_values(attempt: int) -> dict[str, Any]:
    return {
        ":attempt": {"N": str(attempt)},
        ":submitted": {"S": str(JobStatus.SUBMITTED)},
        ":running": {"S": str(JobStatus.RUNNING)},
    }


#: A unit attempt ``:attempt`` may claim at ``:now`` (WorkUnit.claimable, as a condition).
_CLAIMABLE = (
    "attribute_exists(pk) AND (unit_state = :open"
    " OR (unit_state = :leased AND (unit_attempt < :attempt OR lease_until < :now))"
    " OR (unit_state = :failed AND unit_attempt < :attempt AND error_kind = :transient))"
)

_FIELDS = {
    # attribute: (WorkUnit field, how it is read back)
    "unit_key": ("key", str),
    "unit_size": ("size", int),
    "object_size": ("object_size", int),
    "part": ("part", int),
    "parts": ("parts", int),
    "first_group": ("first_group", int),
    "groups": ("groups", int),
    "unit_attempt": ("attempt", int),
    "unit_token": ("token", str),
    "unit_host": ("host", str),
    "lease_until": ("lease_until", float),
    "claims": ("claims", int),
    "staged": ("staged", str),
    "output_key": ("output", str),
    "rows": ("rows", int),
    "sha256": ("sha256", str),
    "seconds": ("seconds", float),
    "error": ("error", str),
}


def unit_key(job_id: str, index: int) -> dict[str, Any]:
    return {"pk": {"S": JOB_PK + job_id}, "sk": {"S": f"{UNIT_SK}{index:06d}"}}


def unit_item(job_id: str, unit: WorkUnit, expires_at: int) -> dict[str, Any]:
    values: dict[str, Any] = {attribute: getattr(unit, name) for attribute, (name, _) in _FIELDS.items()}
    values["unit_state"] = str(unit.state)
    values["span"] = list(unit.span) if unit.span else None
    values["error_kind"] = str(unit.error_kind) if unit.error_kind else None
    return {**unit_key(job_id, unit.index), "expires_at": {"N": str(expires_at)}, **to_item(values)}


def _plain(value: dict[str, Any]) -> Any:
    if "S" in value:
        return value["S"]
    if "N" in value:
        return value["N"]
    if "L" in value:
        return [_plain(v) for v in value["L"]]
    return None


def unit_from_item(item: Mapping[str, Any]) -> WorkUnit:
    values: dict[str, Any] = {"index": int(item["sk"]["S"][len(UNIT_SK) :])}
    for attribute, (name, kind) in _FIELDS.items():
        if attribute in item:
            values[name] = kind(_plain(item[attribute]))
    values["state"] = UnitState(item.get("unit_state", {}).get("S", UnitState.OPEN))
    if "span" in item:
        start, end, footer = (int(v) for v in _plain(item["span"]))
        values["span"] = (start, end, footer)
    if "error_kind" in item:
        values["error_kind"] = ErrorKind(item["error_kind"]["S"])
    return WorkUnit(**values)


def fence(table: str, job_id: str, attempt: int, files: int = 0, rows: int = 0) -> dict[str, Any]:
    """The attempt's fence on the job item; with ``files`` or ``rows``, it also adds them to the
    attempt's progress, in the same transaction as the results they count (an instance that dies
    later has counted everything it recorded)."""
    condition: dict[str, Any] = {
        "TableName": table,
        "Key": job_key(job_id),
        "ConditionExpression": CURRENT_ATTEMPT,
        "ExpressionAttributeNames": {"#status": "status"},
        "ExpressionAttributeValues": current_attempt_values(attempt),
    }
    if not (files or rows):
        return {"ConditionCheck": condition}
    condition["UpdateExpression"] = "ADD progress_files :files, progress_rows :rows"
    condition["ExpressionAttributeValues"] |= {":files": {"N": str(files)}, ":rows": {"N": str(rows)}}
    return {"Update": condition}


class UnitMethods:
    """The unit items' operations, mixed into :class:`~shardflow.aws.jobstore.JobStore`."""

    client: Any
    table: str

    def _transaction(self, actions: list[dict[str, Any]]) -> Claim:
        """Run one transaction whose first action is the attempt's :func:`fence`: ``FENCED`` when
        the fence holds it back, ``TAKEN`` when another action's condition does; contention with
        other writers is retried, a few times with backoff."""
        delay = 0.05
        while True:
            try:
                self.client.transact_write_items(TransactItems=actions)
                return Claim.OK
            except ClientError as error:
                if error.response["Error"]["Code"] != "TransactionCanceledException":
                    raise
                codes = [r.get("Code") for r in error.response.get("CancellationReasons", [])]
                if codes and codes[0] == "ConditionalCheckFailed":
                    return Claim.FENCED
                if "ConditionalCheckFailed" in codes:
                    return Claim.TAKEN
                if not any(c in ("TransactionConflict", "ThrottlingError") for c in codes) or delay > 2.0:
                    raise
                time.sleep(delay)
                delay *= 2

    def list_units(self, job_id: str) -> list[WorkUnit]:
        """Every unit of the job, in index order (consistent reads)."""
        return [unit_from_item(item) for item in self._query_items(job_id, UNIT_SK)]

    def _query_items(self, job_id: str, sort_prefix: str) -> Iterator[dict[str, Any]]:
        """The job's items whose sort key starts with ``sort_prefix`` (its files, its units), in order."""
        paginator = self.client.get_paginator("query")
        for page in paginator.paginate(
            TableName=self.table,
            ConsistentRead=True,
            KeyConditionExpression="pk = :pk AND begins_with(sk, :prefix)",
            ExpressionAttributeValues={":pk": {"S": JOB_PK + job_id}, ":prefix": {"S": sort_prefix}},
        ):
            yield from page["Items"]

    def get_units(self, job_id: str, indices: Iterable[int]) -> list[WorkUnit]:
        """The named units, in index order (consistent reads, 100 to a request)."""
        wanted = sorted(set(indices))
        found: list[WorkUnit] = []
        for start in range(0, len(wanted), 100):
            keys = [unit_key(job_id, i) for i in wanted[start : start + 100]]
            request: dict[str, Any] = {self.table: {"Keys": keys, "ConsistentRead": True}}
            while request:
                response = self.client.batch_get_item(RequestItems=request)
                found += [unit_from_item(item) for item in response["Responses"].get(self.table, [])]
                request = response.get("UnprocessedKeys") or {}
        return sorted(found, key=lambda u: u.index)

    def claim_unit(
        self, job_id: str, attempt: int, index: int, *, token: str, host: str, lease_until: float, now: float
    ) -> Claim:
        """Take unit ``index`` for attempt ``attempt`` with a lease until ``lease_until``."""
        update = {
            "Update": {
                "TableName": self.table,
                "Key": unit_key(job_id, index),
                "UpdateExpression": "SET unit_state = :leased, unit_attempt = :attempt, unit_token = :token, "
                "unit_host = :host, lease_until = :until ADD claims :one",
                "ConditionExpression": _CLAIMABLE,
                "ExpressionAttributeValues": {
                    ":open": {"S": str(UnitState.OPEN)},
                    ":leased": {"S": str(UnitState.LEASED)},
                    ":failed": {"S": str(UnitState.FAILED)},
                    ":transient": {"S": str(ErrorKind.TRANSIENT)},
                    ":attempt": {"N": str(attempt)},
                    ":now": {"N": repr(now)},
                    ":token": {"S": token},
                    ":host": {"S": host},
                    ":until": {"N": repr(lease_until)},
                    ":one": {"N": "1"},
                },
            }
        }
        return self._transaction([fence(self.table, job_id, attempt), update])

    def renew_leases(self, job_id: str, leases: Mapping[int, str], lease_until: float) -> list[int]:
        """Move the held units' leases on to ``lease_until``; returns the units no longer held by
        the given tokens (claimed again by another instance, or finished)."""
        lost = []
        for index, token in leases.items():
            try:
                self.client.update_item(
                    TableName=self.table,
                    Key=unit_key(job_id, index),
                    UpdateExpression="SET lease_until = :until",
                    ConditionExpression="unit_token = :token AND unit_state = :leased",
                    ExpressionAttributeValues={
                        ":until": {"N": repr(lease_until)},
                        ":token": {"S": token},
                        ":leased": {"S": str(UnitState.LEASED)},
                    },
                )
            except ClientError as error:
                if error.response["Error"]["Code"] != "ConditionalCheckFailedException":
                    raise
                lost.append(index)
        return lost

    def finish_unit(self, job_id: str, attempt: int, unit: WorkUnit, file: FileRecord | None = None) -> Claim:
        """Record a claimed unit's result (``unit.state`` DONE or FAILED, with its output or error),
        and with ``file`` its input's result, in one transaction that also adds them to the
        attempt's progress: refused (``TAKEN``) when the unit was claimed again since
        ``unit.token``'s claim, ``FENCED`` when the attempt is over."""
        assert unit.token is not None
        changes: dict[str, Any] = {
            "unit_state": str(unit.state),
            "rows": unit.rows,
            "seconds": round(unit.seconds or 0.0, 3),
            "staged": unit.staged,
            "output_key": unit.output,
            "sha256": unit.sha256,
            "error": unit.error,
            "error_kind": str(unit.error_kind) if unit.error_kind else None,
            "lease_until": None,
        }
        # Every name goes through a placeholder: "rows", for one, is a DynamoDB reserved word.
        names = {f"#a{i}": name for i, name in enumerate(changes)}
        sets = [f"#a{i} = :v{i}" for i, value in enumerate(changes.values()) if value is not None]
        removes = [f"#a{i}" for i, value in enumerate(changes.values()) if value is None]
        values = {f":v{i}": value for i, value in enumerate(changes.values()) if value is not None}
        values |= {":token": unit.token, ":leased": str(UnitState.LEASED)}
        names |= {"#token": "unit_token", "#state": "unit_state"}
        counted = 1 if file is not None and file.status is FileStatus.SUCCEEDED else 0
        actions = [
            fence(self.table, job_id, attempt, files=counted, rows=unit.rows),
            {
                "Update": {
                    "TableName": self.table,
                    "Key": unit_key(job_id, unit.index),
                    "UpdateExpression": "SET " + ", ".join(sets) + " REMOVE " + ", ".join(removes),
                    "ConditionExpression": "#token = :token AND #state = :leased",
                    "ExpressionAttributeNames": names,
                    "ExpressionAttributeValues": to_item(values),
                }
            },
        ]
        if file is not None:
            actions.append(self._file_put(job_id, file))
        return self._transaction(actions)

    def record_split_file(self, job_id: str, attempt: int, file: FileRecord) -> Claim:
        """Record the result of a split input once its parts have all settled (whoever finished
        the last part writes it; a second writer is refused as ``TAKEN``)."""
        counted = 1 if file.status is FileStatus.SUCCEEDED else 0
        return self._transaction([fence(self.table, job_id, attempt, files=counted), self._file_put(job_id, file)])

    def _file_put(self, job_id: str, file: FileRecord) -> dict[str, Any]:
        # A file's result is written once per attempt: never over a success.
        return {
            "Put": {
                "TableName": self.table,
                "Item": file_item(job_id, file, int(time.time() + 90 * 86400)),
                "ConditionExpression": "attribute_not_exists(pk) OR file_status <> :succeeded",
                "ExpressionAttributeValues": {":succeeded": {"S": str(FileStatus.SUCCEEDED)}},
            }
        }
