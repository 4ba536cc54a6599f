"""The job record: what a job is (its :class:`~shardflow.core.job.JobSpec`), where it stands, and
what each of its input files became; with the legal status changes in one table."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from shardflow.core.artifact import ModelArtifact
from shardflow.core.job import JobSpec
from shardflow.errors import IllegalTransition

__all__ = [
    "TRANSITIONS",
    "AttemptRecord",
    "ErrorKind",
    "FileRecord",
    "FileStatus",
    "JobRecord",
    "JobStatus",
    "attempts_after",
    "check_transition",
    "parse_time",
    "utcnow",
]


class JobStatus(enum.StrEnum):
    PENDING = "PENDING"
    SUBMITTED = "SUBMITTED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def is_active(self) -> bool:
        """An attempt is submitted or running: its processing job may be using instances."""
        return self in (JobStatus.SUBMITTED, JobStatus.RUNNING)


class FileStatus(enum.StrEnum):
    PENDING = "PENDING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"


class ErrorKind(enum.StrEnum):
    """Why a file failed, decided where it failed: whether another attempt may succeed.

    ``INPUT`` (unreadable, a missing or mistyped column, an unsafe name) and ``MODEL`` (refused,
    not a model, ``predict`` raising on the data) fail the same way every time and are never
    resubmitted; ``TRANSIENT`` (a worker or instance killed, an output that never arrived, a
    full disk) may pass on another attempt.
    """

    INPUT = "input"
    MODEL = "model"
    TRANSIENT = "transient"

    @property
    def retryable(self) -> bool:
        return self is ErrorKind.TRANSIENT


#: The legal status changes, in one place. FAILED -> SUBMITTED is a resubmission of the
#: files that did not succeed; SUBMITTED -> FAILED covers a job that died before its script ran.
TRANSITIONS: Mapping[JobStatus, frozenset[JobStatus]] = {
    JobStatus.PENDING: frozenset({JobStatus.SUBMITTED, JobStatus.CANCELLED}),
    JobStatus.SUBMITTED: frozenset({JobStatus.RUNNING, JobStatus.FAILED, JobStatus.CANCELLED}),
    JobStatus.RUNNING: frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED}),
    JobStatus.FAILED: frozenset({JobStatus.SUBMITTED, JobStatus.CANCELLED}),
    JobStatus.SUCCEEDED: frozenset(),
    JobStatus.CANCELLED: frozenset(),
}

#: Timestamps are ISO-8601 UTC strings: readable in the console and sortable in an index.
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def utcnow() -> str:
    return datetime.now(UTC).strftime(_TIME_FORMAT)


def parse_time(value: str) -> datetime:
    return datetime.strptime(value, _TIME_FORMAT).replace(tzinfo=UTC)


def check_transition(job_id: str, current: JobStatus, to: JobStatus) -> None:
    """:raises IllegalTransition: ``current -> to`` is not in :data:`TRANSITIONS`."""
    if to not in TRANSITIONS[current]:
        allowed = ", ".join(sorted(TRANSITIONS[current])) or "none (it is final)"
        raise IllegalTransition(f"job {job_id}: {current} -> {to} is not allowed; from {current}: {allowed}")


@dataclass(frozen=True)
class AttemptRecord:
    """One attempt of a job: the processing job that ran it, where, when, and how it ended.

    :param status: how the attempt ended (SUCCEEDED, FAILED or CANCELLED); ``None`` while it runs.
    :param files: the files it was given; ``files_done`` and ``rows`` what it reported finishing.
    """

    number: int
    processing_job: str
    backend: str
    instance_type: str
    instance_count: int
    files: int
    submitted_at: str
    started_at: str | None = None
    ended_at: str | None = None
    status: JobStatus | None = None
    reason: str | None = None
    files_done: int = 0
    rows: int = 0


#: How much of a failure's message an attempt keeps (the job's ``error`` keeps the whole).
_REASON_CHARS = 500


@dataclass(frozen=True)
class JobRecord:
    """One batch-inference job: what to run (``job``), where it stands, and what it has done.
    ``model`` is the artifact prepare resolved ``job.model`` to, with its lineage.
    ``distribution`` is how prepare decided the inputs reach the instances (``sharded`` or
    ``dynamic``; ``None`` in records written before it was chosen: sharded), and
    ``predicted_imbalance`` the sharded shares' max/mean bytes per instance it decided on.
    ``attempt_instances`` is the current attempt's instance count."""

    job_id: str
    job: JobSpec
    model: ModelArtifact | None = None
    status: JobStatus = JobStatus.PENDING
    attempt: int = 0
    processing_jobs: list[str] = field(default_factory=list)
    attempt_files: int = 0
    progress_files: int = 0
    progress_rows: int = 0
    files_total: int = 0
    files_succeeded: int = 0
    files_failed: int = 0
    rows: int = 0
    files_refused: int = 0
    refused_files: list[str] = field(default_factory=list)
    created_at: str = ""
    updated_at: str = ""
    heartbeat_at: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    error: str | None = None
    stopped_by: str | None = None
    attempts: list[AttemptRecord] = field(default_factory=list)
    distribution: str | None = None
    predicted_imbalance: float | None = None
    attempt_instances: int = 0
    version: int = 0

    # What readers of a record ask most, named as in the job table's indexes and the status table.
    @property
    def pipeline(self) -> str:
        return self.job.pipeline

    @property
    def input_prefix(self) -> str:
        return self.job.input.prefix

    @property
    def artifact(self) -> ModelArtifact:
        """The model every attempt loads (a record written before lineage has its spec's ``model.uri``)."""
        return self.model or ModelArtifact.of_spec(self.job.model)

    @property
    def output_prefix(self) -> str:
        return self.job.output.prefix

    @property
    def backend(self) -> str:
        return self.job.compute.backend

    @property
    def max_attempts(self) -> int:
        return self.job.retries.max_attempts

    @property
    def dynamic(self) -> bool:
        """Whether the job's instances claim work units from the record (see :mod:`shardflow.core.units`)."""
        return self.distribution == "dynamic"

    @property
    def current_processing_job(self) -> str | None:
        return self.processing_jobs[-1] if self.processing_jobs else None

    def is_silent(self, now: datetime | None = None) -> bool:
        """Whether the current attempt's script stopped beating for longer than the timeout.

        Only an attempt that has beaten once can fall silent: before that, it is starting (a
        SageMaker instance takes minutes), and the backend's state and max runtime govern.
        """
        if not self.heartbeat_at:
            return False
        silence = ((now or datetime.now(UTC)) - parse_time(self.heartbeat_at)).total_seconds()
        return silence > self.job.heartbeat_timeout_seconds

    def duration_seconds(self) -> float | None:
        if not self.started_at:
            return None
        end = parse_time(self.finished_at) if self.finished_at else datetime.now(UTC)
        return (end - parse_time(self.started_at)).total_seconds()


def attempts_after(record: JobRecord, to: JobStatus, changes: Mapping[str, Any], now: str) -> list[AttemptRecord]:
    """The job's attempt log once ``record`` moves to ``to`` with ``changes``, as every job store
    writes it with the transition: SUBMITTED opens an attempt, RUNNING marks its start, and an end
    closes it with its outcome, its reason and what it finished."""
    attempts = list(record.attempts)
    last = attempts[-1] if attempts else None
    if to is JobStatus.SUBMITTED:
        processing_jobs = changes.get("processing_jobs") or record.processing_jobs
        files = int(changes.get("attempt_files", record.attempt_files))
        compute = record.job.compute
        attempts.append(
            AttemptRecord(
                number=int(changes.get("attempt", record.attempt)),
                processing_job=str(processing_jobs[-1]) if processing_jobs else "",
                backend=compute.backend,
                instance_type=compute.instance_type,
                instance_count=int(changes.get("attempt_instances") or compute.instances_for(files)),
                files=files,
                submitted_at=now,
            )
        )
    elif last is not None and last.status is None and to is JobStatus.RUNNING and last.started_at is None:
        attempts[-1] = replace(last, started_at=now)
    elif (
        last is not None and last.status is None and to in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)
    ):
        error = changes.get("error")
        attempts[-1] = replace(
            last,
            ended_at=now,
            status=to,
            reason=str(error)[:_REASON_CHARS] if error else None,
            files_done=record.progress_files,
            rows=record.progress_rows,
        )
    return attempts


@dataclass(frozen=True)
class FileRecord:
    """One input object of a job (``key`` relative to the input prefix) and what became of it.

    :param error_kind: why it failed (or must be done again); ``None`` for a file without an
        error, or one recorded before failures were classified (counted as retryable).
    :param parts: the work units it is cut into (dynamic distribution with ``split_objects``:
        ranges of its row groups, each with its own output); 1 otherwise.
    """

    key: str
    size: int
    status: FileStatus = FileStatus.PENDING
    rows: int = 0
    output_key: str | None = None
    error: str | None = None
    processing_job: str | None = None
    seconds: float | None = None
    error_kind: ErrorKind | None = None
    finished_at: str | None = None
    parts: int = 1

    @property
    def retryable(self) -> bool:
        """Not done yet, and nothing known says another attempt would fail the same way."""
        return self.status is not FileStatus.SUCCEEDED and (self.error_kind is None or self.error_kind.retryable)
