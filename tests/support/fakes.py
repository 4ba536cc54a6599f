"""In-memory implementations of the lifecycle's ports (:mod:`shardflow.core.ports`), the way httpx
ships a ``MockTransport``: the job table, the object store and a compute backend, for unit tests."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from shardflow.core.ports import ModelPackage, ProcessingRequest, ProcessingState, ProcessingStatus
from shardflow.core.record import FileRecord, FileStatus, JobRecord, JobStatus, attempts_after, check_transition
from shardflow.core.s3uri import S3Object, S3Uri
from shardflow.core.units import Claim, UnitState, WorkUnit
from shardflow.errors import (
    JobConflict,
    JobNotFound,
    ObjectExists,
    ObjectNotFound,
    ProcessingJobExists,
    ProcessingRequestRefused,
    ResourceError,
)

__all__ = ["FakeBackend", "InMemoryJobStore", "InMemoryModelCatalog", "InMemoryObjectStore"]

#: The job record's timestamp form (:func:`shardflow.core.record.utcnow`).
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
_JOB_FIELDS = {f.name for f in fields(JobRecord)}
_FINAL = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


def _copy(record: JobRecord) -> JobRecord:
    """A record as a read returns it: its lists are its own, as if decoded from an item."""
    return replace(
        record,
        processing_jobs=list(record.processing_jobs),
        refused_files=list(record.refused_files),
        attempts=list(record.attempts),
    )


class InMemoryJobStore:
    """The job table in a dict, with the rules of :class:`shardflow.aws.jobstore.JobStore`: a job
    is created once, every status change is checked against the transitions and the version read,
    and a heartbeat or an attempt's file results count only for the job's current, active attempt.

    :param table: the name requests report to.
    :param clock: the time written into records (``created_at``, ``finished_at``,
        ``heartbeat_at``, ...); set it to place an event in the past.
    """

    def __init__(self, table: str = "shardflow-jobs", clock: Callable[[], datetime] | None = None) -> None:
        self.table = table
        self.clock: Callable[[], datetime] = clock or (lambda: datetime.now(UTC))
        self._jobs: dict[str, JobRecord] = {}
        self._files: dict[str, dict[str, FileRecord]] = {}
        self._units: dict[str, dict[int, WorkUnit]] = {}
        self._lock = threading.Lock()
        #: ``(job_id, attempt)`` of every batch of file results the fence refused, in order.
        self.refused: list[tuple[str, int]] = []

    def _now(self) -> str:
        return self.clock().strftime(_TIME_FORMAT)

    def create_job(self, record: JobRecord, files: Iterable[FileRecord], units: Iterable[WorkUnit] = ()) -> JobRecord:
        """Write a new job, its files and its units; if the job exists already, return it unchanged."""
        if record.job_id in self._jobs:
            return self.get_job(record.job_id)
        files = list(files)
        now = self._now()
        record = replace(record, created_at=now, updated_at=now, version=1, files_total=len(files))
        self._files[record.job_id] = {f.key: f for f in files}
        self._units[record.job_id] = {u.index: u for u in units}
        self._jobs[record.job_id] = _copy(record)
        return _copy(record)

    def get_job(self, job_id: str) -> JobRecord:
        if job_id not in self._jobs:
            raise JobNotFound(f"no job {job_id!r} in table {self.table!r}")
        return _copy(self._jobs[job_id])

    def transition(self, record: JobRecord, to: JobStatus, **changes: Any) -> JobRecord:
        """Move ``record`` to ``to`` with ``changes``, if nobody else wrote since it was read.

        :raises IllegalTransition: ``record.status -> to`` is not in :data:`TRANSITIONS`.
        :raises JobConflict: the stored job is no longer at ``record.version``.
        """
        check_transition(record.job_id, record.status, to)
        unknown = set(changes) - (_JOB_FIELDS - {"job", "job_id"})
        if unknown:
            raise TypeError(f"not job fields: {sorted(unknown)}")
        current = self.get_job(record.job_id)
        if (current.version, current.status) != (record.version, record.status):
            raise JobConflict(
                f"job {record.job_id} changed since it was read at version {record.version} "
                f"({record.status}); it is now {current.status} at version {current.version}. "
                "Re-read the job and decide again."
            )
        now = self._now()
        values: dict[str, Any] = {**changes, "updated_at": now, "version": record.version + 1}
        if to in _FINAL:
            values.setdefault("finished_at", now)
        values["attempts"] = attempts_after(record, to, changes, now)
        updated = replace(record, **values, status=to)
        self._jobs[record.job_id] = _copy(updated)
        return updated

    def heartbeat(self, job_id: str, attempt: int, files: int = 0, rows: int = 0) -> bool:
        """Add progress to the job's current attempt; refused (``False``) for any other attempt."""
        record = self._jobs.get(job_id)
        if record is None or not self.is_current(record, attempt):
            return False
        self._jobs[job_id] = replace(
            record,
            heartbeat_at=self._now(),
            progress_files=record.progress_files + files,
            progress_rows=record.progress_rows + rows,
        )
        return True

    def list_files(self, job_id: str) -> list[FileRecord]:
        """The job's files in key order, as the table's sort key returns them."""
        return [f for _, f in sorted(self._files.get(job_id, {}).items())]

    def record_file_results(self, job_id: str, results: Iterable[FileRecord], attempt: int | None = None) -> bool:
        """Store each file's outcome, replacing what was stored for its key; with ``attempt``,
        refused whole (``False``) unless the job is still at that attempt and active."""
        record = self._jobs.get(job_id)
        if attempt is not None and (record is None or not self.is_current(record, attempt)):
            self.refused.append((job_id, attempt))
            return False
        self._files.setdefault(job_id, {}).update((f.key, f) for f in results)
        return True

    # -- units: the rules of shardflow.aws.job_units ------------------------------------------

    def list_units(self, job_id: str) -> list[WorkUnit]:
        return [u for _, u in sorted(self._units.get(job_id, {}).items())]

    def get_units(self, job_id: str, indices: Iterable[int]) -> list[WorkUnit]:
        units = self._units.get(job_id, {})
        return [units[i] for i in sorted(set(indices)) if i in units]

    def _fenced(self, job_id: str, attempt: int) -> bool:
        record = self._jobs.get(job_id)
        return record is None or not self.is_current(record, attempt)

    def claim_unit(
        self, job_id: str, attempt: int, index: int, *, token: str, host: str, lease_until: float, now: float
    ) -> Claim:
        with self._lock:
            if self._fenced(job_id, attempt):
                return Claim.FENCED
            unit = self._units.get(job_id, {}).get(index)
            if unit is None or not unit.claimable(attempt, now):
                return Claim.TAKEN
            self._units[job_id][index] = replace(
                unit,
                state=UnitState.LEASED,
                attempt=attempt,
                token=token,
                host=host,
                lease_until=lease_until,
                claims=unit.claims + 1,
            )
            return Claim.OK

    def renew_leases(self, job_id: str, leases: Mapping[int, str], lease_until: float) -> list[int]:
        lost = []
        with self._lock:
            for index, token in leases.items():
                unit = self._units[job_id][index]
                if unit.token == token and unit.state is UnitState.LEASED:
                    self._units[job_id][index] = replace(unit, lease_until=lease_until)
                else:
                    lost.append(index)
        return lost

    def finish_unit(self, job_id: str, attempt: int, unit: WorkUnit, file: FileRecord | None = None) -> Claim:
        with self._lock:
            if self._fenced(job_id, attempt):
                return Claim.FENCED
            stored = self._units[job_id][unit.index]
            if stored.token != unit.token or stored.state is not UnitState.LEASED:
                return Claim.TAKEN
            if file is not None and not self._may_record(job_id, file):
                return Claim.TAKEN
            self._units[job_id][unit.index] = replace(unit, lease_until=None, claims=stored.claims)
            if file is not None:
                self._files[job_id][file.key] = file
            self._count(job_id, file, unit.rows)
            return Claim.OK

    def record_split_file(self, job_id: str, attempt: int, file: FileRecord) -> Claim:
        with self._lock:
            if self._fenced(job_id, attempt):
                return Claim.FENCED
            if not self._may_record(job_id, file):
                return Claim.TAKEN
            self._files[job_id][file.key] = file
            self._count(job_id, file, 0)
            return Claim.OK

    def _count(self, job_id: str, file: FileRecord | None, rows: int) -> None:
        """A result adds to the attempt's progress in the same write, as the DynamoDB store's does."""
        succeeded = file is not None and file.status is FileStatus.SUCCEEDED
        record = self._jobs[job_id]
        self._jobs[job_id] = replace(
            record, progress_files=record.progress_files + succeeded, progress_rows=record.progress_rows + rows
        )

    def _may_record(self, job_id: str, file: FileRecord) -> bool:
        stored = self._files.get(job_id, {}).get(file.key)
        return stored is None or stored.status is not FileStatus.SUCCEEDED

    @staticmethod
    def is_current(record: JobRecord, attempt: int) -> bool:
        """The fence of :class:`shardflow.aws.jobstore.JobStore`: the job is at ``attempt`` and active."""
        return record.attempt == attempt and record.status.is_active


class InMemoryObjectStore:
    """Buckets in a dict, with S3's listing order (UTF-8 bytes of the key); a missing object is
    :class:`~shardflow.errors.ObjectNotFound`, as :class:`shardflow.aws.s3.S3ObjectStore` says it."""

    def __init__(self) -> None:
        self.objects: dict[S3Uri, bytes] = {}
        #: ``(source, target)`` of every copy, in order.
        self.copies: list[tuple[S3Uri, S3Uri]] = []

    def list(self, prefix: S3Uri) -> Iterator[S3Object]:
        found = [u for u in self.objects if u.bucket == prefix.bucket and u.key.startswith(prefix.key)]
        for uri in sorted(found, key=lambda u: u.key.encode()):
            yield S3Object(uri.key, len(self.objects[uri]))

    def read(self, uri: S3Uri, start: int | None = None, end: int | None = None) -> bytes:
        """The object's bytes; with ``start`` and ``end``, only that inclusive range."""
        body = self._body(uri)
        return body[start : end + 1] if start is not None and end is not None else body

    def upload(self, path: str, uri: S3Uri) -> None:
        self.put(uri, Path(path).read_bytes())

    def download(self, uri: S3Uri, into: IO[bytes]) -> None:
        into.write(self._body(uri))

    def put(self, uri: S3Uri, body: bytes, *, create_only: bool = False) -> None:
        self._refuse_existing(uri, create_only)
        self.objects[uri] = bytes(body)

    def copy(self, source: S3Uri, target: S3Uri, *, create_only: bool) -> str:
        """Copy as S3 does with ``If-None-Match: *`` when ``create_only``; returns the copy's sha256."""
        body = self._body(source)
        self._refuse_existing(target, create_only)
        self.objects[target] = body
        self.copies.append((source, target))
        return hashlib.sha256(body).hexdigest()

    def delete_objects(self, uris: Iterable[S3Uri]) -> int:
        named = list(uris)
        for uri in named:
            self.objects.pop(uri, None)
        return len(named)

    def _refuse_existing(self, uri: S3Uri, create_only: bool) -> None:
        if create_only and uri in self.objects:
            raise ObjectExists(f"{uri} exists already and this write may only create it")

    def delete(self, uri: S3Uri) -> None:
        """Remove an object, as a lifecycle rule or a careless user would."""
        del self.objects[uri]

    def _body(self, uri: S3Uri) -> bytes:
        if uri not in self.objects:
            raise ObjectNotFound(f"no object at {uri}: check the address (and that it was uploaded)")
        return self.objects[uri]


class FakeBackend:
    """A compute backend that runs nothing: it keeps the requests it was sent, and each job stays
    ``InProgress`` until the test ends it with :meth:`set_state`."""

    name = "fake"

    def __init__(self) -> None:
        #: Every request that started a job, in order.
        self.requests: list[ProcessingRequest] = []
        #: Every name :meth:`stop` was called with, in order.
        self.stopped: list[str] = []
        self._states: dict[str, ProcessingStatus] = {}
        self._refusal: str | None = None
        self._crash: BaseException | None = None

    def submit(self, request: ProcessingRequest) -> None:
        if self._crash is not None:
            crash, self._crash = self._crash, None
            raise crash
        if self._refusal is not None:
            raise ProcessingRequestRefused(self._refusal)
        if request.job_name in self._states:
            raise ProcessingJobExists(f"processing job {request.job_name!r} exists already")
        self.requests.append(request)
        self._states[request.job_name] = ProcessingStatus(ProcessingState.IN_PROGRESS)

    def describe(self, job_name: str) -> ProcessingStatus | None:
        return self._states.get(job_name)

    def stop(self, job_name: str) -> None:
        """Record the call; a job still running ends ``Stopped`` at once."""
        self.stopped.append(job_name)
        status = self._states.get(job_name)
        if status is not None and not status.state.is_final:
            self._states[job_name] = ProcessingStatus(ProcessingState.STOPPED, "stopped on request")

    def config(self) -> dict[str, Any]:
        return {}

    def set_state(self, job_name: str, state: ProcessingState, failure_reason: str | None = None) -> None:
        """What the backend reports for ``job_name`` from now on."""
        if job_name not in self._states:
            raise KeyError(f"no processing job {job_name!r} was submitted")
        self._states[job_name] = ProcessingStatus(ProcessingState(state), failure_reason)

    def refuse(self, reason: str) -> None:
        """Refuse every request from now on, as a backend refuses a bad setting."""
        self._refusal = reason

    def crash_next_submit(self, error: BaseException) -> None:
        """Raise ``error`` from the next :meth:`submit` before anything starts (a killed task)."""
        self._crash = error


class InMemoryModelCatalog:
    """The model catalog port (SageMaker's training jobs and Model Registry) in memory: training
    jobs by name, and packages added in order, so the last one added is the newest."""

    def __init__(self) -> None:
        self.training_jobs: dict[str, tuple[str, str]] = {}
        self.packages: list[tuple[str, ModelPackage]] = []

    def add_training_job(self, name: str, model_uri: str, status: str = "Completed") -> None:
        self.training_jobs[name] = (status, model_uri)

    def add_package(
        self, group: str, model_data_url: str, sha256: str | None, status: str = "Approved"
    ) -> ModelPackage:
        version = 1 + sum(1 for _, p in self.packages if p.group == group)
        arn = f"arn:aws:sagemaker:us-east-1:123456789012:model-package/{group}/{version}"
        package = ModelPackage(arn=arn, group=group, version=version, model_data_url=model_data_url, sha256=sha256)
        self.packages.append((status, package))
        return package

    def training_job_model(self, name: str) -> str:
        if name not in self.training_jobs:
            raise ResourceError(f"training job {name} was not found")
        status, uri = self.training_jobs[name]
        if status != "Completed":
            raise ResourceError(f"training job {name} is {status}, not Completed")
        return uri

    def newest_package(self, group: str, status: str) -> ModelPackage:
        found = [p for s, p in self.packages if p.group == group and s == status]
        if not found:
            raise ResourceError(f"model package group {group} has no package with approval status {status}")
        return found[-1]
