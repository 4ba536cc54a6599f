"""The life of one job after prepare: submit (or reconnect), settle, and decide what comes next.

Plain functions over the ports of :mod:`shardflow.core.ports`; the Airflow operators and the
sensor are thin wrappers around them, and ``shardflow run`` calls them without Airflow.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from shardflow.core.planning import processing_job_name
from shardflow.core.ports import ComputeBackend, JobStorePort, ObjectStore, ProcessingRequest, ProcessingState
from shardflow.core.record import ErrorKind, FileRecord, FileStatus, JobRecord, JobStatus, parse_time
from shardflow.core.s3uri import S3Uri
from shardflow.core.staging import attempt_of, job_staging
from shardflow.core.units import UnitState
from shardflow.errors import JobFailed, ProcessingJobExists, ProcessingRequestRefused

__all__ = [
    "Progress",
    "advance_job",
    "backoff_after",
    "failure_message",
    "retry_at",
    "settle_job",
    "stop_job",
    "submit_job",
    "summarize",
    "wait_timeout_seconds",
]


def _request(store: JobStorePort, record: JobRecord, name: str, files: Sequence[FileRecord]) -> ProcessingRequest:
    prefix = S3Uri.parse(record.input_prefix)
    return ProcessingRequest.for_attempt(
        record.job,
        job_id=record.job_id,
        job_table=store.table,
        attempt=record.attempt,
        job_name=name,
        input_keys=tuple(prefix.key + f.key for f in files),
        model=record.artifact,
        units=_units_left(store, record, files),
    )


def _units_left(store: JobStorePort, record: JobRecord, files: Sequence[FileRecord]) -> int:
    """A dynamic job's units the attempt over ``files`` may claim (those not done: a split file
    whose other parts succeeded needs instances only for the rest); 0 for a sharded job."""
    if not record.dynamic:
        return 0
    keys = {f.key for f in files}
    left = sum(1 for u in store.list_units(record.job_id) if u.key in keys and u.state is not UnitState.DONE)
    return max(1, left)


def submit_job(job_id: str, store: JobStorePort, backend: ComputeBackend) -> JobRecord:
    """Start the job's next attempt, or reconnect to the one already running.

    The processing job's name is stored in the record before the job is started, so a retried
    task finds it and never pays twice; a new attempt covers only the files that did not succeed
    and may succeed yet (:attr:`FileRecord.retryable`): a bad input or a model error is never
    resubmitted.

    :raises JobFailed: the job is cancelled, out of attempts, or has nothing left to retry.
    """
    record = store.get_job(job_id)
    if record.status is JobStatus.SUCCEEDED:
        return record
    if record.status in (JobStatus.SUBMITTED, JobStatus.RUNNING):
        name = record.current_processing_job
        assert name is not None
        if backend.describe(name) is None:  # recorded, but the task died before starting it
            files = [f for f in store.list_files(job_id) if f.retryable]
            _start(store, backend, record, _request(store, record, name, files))
        return record
    if record.status is JobStatus.CANCELLED:
        raise JobFailed(f"job {job_id} was cancelled")
    if record.status is JobStatus.FAILED and record.attempt >= record.max_attempts:
        raise JobFailed(f"job {job_id} failed after {record.attempt} attempt(s): {record.error}")
    all_files = store.list_files(job_id)
    files = [f for f in all_files if f.retryable]
    if record.status is JobStatus.FAILED and not files:
        raise JobFailed(failure_message(record, all_files))
    attempt = record.attempt + 1
    name = processing_job_name(job_id, attempt)
    units = _units_left(store, record, files)
    record = store.transition(
        record,
        JobStatus.SUBMITTED,
        attempt=attempt,
        processing_jobs=[*record.processing_jobs, name],
        attempt_files=len(files),
        attempt_instances=record.job.compute.instances_for(units or len(files)),
        progress_files=0,
        progress_rows=0,
        heartbeat_at=None,
        error=None,
    )
    _start(store, backend, record, _request(store, record, name, files))
    return record


def _start(store: JobStorePort, backend: ComputeBackend, record: JobRecord, request: ProcessingRequest) -> None:
    """Start the recorded attempt. A name that exists already is this attempt, started by an
    earlier try (reconnect, never pay twice); a refused request fails the job for good."""
    try:
        backend.submit(request)
    except ProcessingJobExists:
        return
    except ProcessingRequestRefused as error:
        store.transition(
            record, JobStatus.FAILED, error=f"the {backend.name} backend refused {request.job_name}: {error}"
        )
        raise JobFailed(
            f"job {record.job_id}: the {backend.name} backend refused processing job {request.job_name}:\n{error}\n"
            "Fix the pipeline spec and trigger a new run."
        ) from None


#: No wait between two attempts is longer than an hour, however long the backoff has grown.
_MAX_BACKOFF_SECONDS = 3600


def backoff_after(attempt: int, backoff_seconds: int) -> int:
    """The wait after failed attempt ``attempt``: ``backoff_seconds``, doubled for each attempt
    after the first, at most an hour."""
    return min(backoff_seconds * 2 ** max(attempt - 1, 0), _MAX_BACKOFF_SECONDS)


def wait_timeout_seconds(max_attempts: int, max_runtime_seconds: int, backoff_seconds: int) -> int:
    """How long to wait for a job: until every attempt could have used its whole runtime and every
    backoff between them (:func:`backoff_after`), with ten minutes to spare."""
    waits = sum(backoff_after(attempt, backoff_seconds) for attempt in range(1, max_attempts))
    return max_attempts * max_runtime_seconds + waits + 600


def retry_at(record: JobRecord) -> datetime:
    """When a failed attempt may be resubmitted: :func:`backoff_after` its end."""
    delay = backoff_after(record.attempt, record.job.retries.backoff_seconds)
    return parse_time(record.finished_at or record.updated_at) + timedelta(seconds=delay)


def _unuploaded(files: list[FileRecord], objects: ObjectStore, record: JobRecord) -> list[FileRecord]:
    """Files marked SUCCEEDED whose output is not in the staging of the attempt that made it: an
    attempt that did not complete never uploaded them (outputs are uploaded at the end of a job),
    so they must be done again."""
    if record.dynamic:  # its instances upload each output before they record its unit done
        return []
    staging = job_staging(record.output_prefix, record.job_id)
    present = {o.key[len(staging.key) :] for o in objects.list(staging)}
    return [
        f
        for f in files
        if f.status is FileStatus.SUCCEEDED
        and f"attempt-{attempt_of(record.processing_jobs, f.processing_job)}/{f.output_key}" not in present
    ]


def settle_job(job_id: str, store: JobStorePort, backend: ComputeBackend, objects: ObjectStore) -> JobRecord:
    """Bring the record in line with the backend once the processing job has ended, or stop a
    job whose script has gone silent for longer than the heartbeat timeout.

    The record says what each file did; the backend says whether the job as a whole ended and
    why; S3 says which outputs really arrived. A job is SUCCEEDED once every file succeeded and
    its output is there, and prepare refused no key.
    """
    record = store.get_job(job_id)
    if record.status not in (JobStatus.SUBMITTED, JobStatus.RUNNING):
        return record
    name = record.current_processing_job
    status = backend.describe(name) if name else None
    reasons: list[str] = []
    if status is not None and not status.state.is_final:
        if not record.is_silent():
            return record
        assert name is not None
        backend.stop(name)
        reasons.append(
            f"processing job {name} sent no heartbeat since {record.heartbeat_at} "
            f"(heartbeat_timeout_seconds={record.job.heartbeat_timeout_seconds}); it was stopped"
        )
    elif status is None:
        reasons.append(f"processing job {name} is unknown to the {backend.name} backend")
    elif status.state is not ProcessingState.COMPLETED:
        reasons.append(f"processing job {name} {status.state}: {status.failure_reason or 'no reason given'}")

    files = store.list_files(job_id)
    lost = _unuploaded(files, objects, record)
    if lost:
        how = "ended without completing" if reasons else "completed but its outputs are missing"
        redo = [
            replace(
                f,
                status=FileStatus.PENDING,
                error=f"output {f.output_key} never reached S3 ({name} {how})",
                error_kind=ErrorKind.TRANSIENT,
            )
            for f in lost
        ]
        if not store.record_file_results(job_id, redo, attempt=record.attempt):
            return store.get_job(job_id)  # another reader settled this attempt first
        by_key = {f.key: f for f in redo}
        files = [by_key.get(f.key, f) for f in files]
    failed = [f for f in files if f.status is FileStatus.FAILED]
    pending = [f for f in files if f.status is FileStatus.PENDING]
    counts = file_counts(files)
    # Every file predicted and its output in S3: the job's work is done, whatever the processing
    # job reports about its own end (a resubmission would have no file to run).
    if not failed and not pending and not record.files_refused:
        if record.status is JobStatus.SUBMITTED:
            record = store.transition(record, JobStatus.RUNNING)
        return store.transition(record, JobStatus.SUCCEEDED, **counts)
    reasons += [f"{f.key}: {f.error}" for f in failed]
    if pending:
        reasons.append(
            f"{len(pending)} file(s) have no result, e.g. {pending[0].key}: {pending[0].error or 'never reported'}"
        )
    if record.files_refused:
        reasons.append(
            f"{record.files_refused} input key(s) refused and never read: " + "; ".join(record.refused_files)
        )
    return store.transition(record, JobStatus.FAILED, error="\n".join(reasons)[:4000], **counts)


@dataclass(frozen=True)
class Progress:
    """Where a job stands after :func:`advance_job`.

    :param record: the job as it is now.
    :param summary: set when the job succeeded: what :func:`summarize` says of it.
    :param retry_at: set when an attempt failed and the next may start only at this time.
    """

    record: JobRecord
    summary: dict[str, Any] | None = None
    retry_at: datetime | None = None


def advance_job(job_id: str, store: JobStorePort, backend: ComputeBackend, objects: ObjectStore) -> Progress:
    """The one place where a job's fate is decided, for the sensor and for ``shardflow run``.

    Settles the record; a succeeded job gets its summary; a failed attempt with attempts left is
    resubmitted (only what did not succeed and may succeed yet) once its backoff has passed. A
    job with nothing left to retry (every failure a bad input or a model error) fails at once.

    :raises JobFailed: nothing is left to retry, attempts are exhausted, or the job was cancelled.
    """
    record = settle_job(job_id, store, backend, objects)
    if record.status is JobStatus.SUCCEEDED:
        return Progress(record, summary=summarize(record))
    if record.status is JobStatus.CANCELLED:
        raise JobFailed(failure_message(record))
    if record.status is JobStatus.FAILED:
        files = store.list_files(job_id)
        if record.attempt < record.max_attempts and any(f.retryable for f in files):
            when = retry_at(record)
            if when > datetime.now(UTC):
                return Progress(record, retry_at=when)
            return Progress(submit_job(job_id, store, backend))
        raise JobFailed(failure_message(record, files))
    return Progress(record)


def file_counts(files: Sequence[FileRecord]) -> dict[str, int]:
    """The record's counts of what its files reported: succeeded, failed, and rows predicted."""
    return {
        "files_succeeded": sum(1 for f in files if f.status is FileStatus.SUCCEEDED),
        "files_failed": sum(1 for f in files if f.status is FileStatus.FAILED),
        "rows": sum(f.rows for f in files if f.status is FileStatus.SUCCEEDED),
    }


def stop_job(job_id: str, store: JobStorePort, backend: ComputeBackend, by: str) -> JobRecord:
    """Stop a job for good on a user's word: its running processing job is stopped and the job is
    CANCELLED, recording ``by`` (who stopped it). A job that has ended is returned unchanged.

    :raises JobConflict: the job changed while it was being stopped; read it and try again.
    """
    record = store.get_job(job_id)
    if record.status in (JobStatus.SUCCEEDED, JobStatus.CANCELLED):
        return record
    name = record.current_processing_job
    if name and record.status.is_active:
        backend.stop(name)
    reason = f"stopped by {by}" + (
        f"; processing job {name} was asked to stop" if name and record.status.is_active else ""
    )
    # What went wrong before the stop stays readable after it.
    error = f"{reason}\n{record.error}" if record.error else reason
    # What the files had reported stays counted: a stopped job shows how far it got.
    counts = file_counts(store.list_files(job_id))
    return store.transition(record, JobStatus.CANCELLED, stopped_by=by, error=error[:4000], **counts)


def failure_message(record: JobRecord, files: Sequence[FileRecord] = ()) -> str:
    """What a user reads when a job has failed for good: what failed, what is kept, and what to
    do, by cause: a model error names the model; bad inputs and refused keys are named above."""
    if record.status is JobStatus.CANCELLED:
        who = f" by {record.stopped_by}" if record.stopped_by else ""
        return (
            f"job {record.job_id} CANCELLED after {record.attempt} of {record.max_attempts} attempt(s): "
            f"it was stopped{who}; "
            f"the outputs of the {record.files_succeeded} file(s) that succeeded are kept, unpublished, under "
            f"{job_staging(record.output_prefix, record.job_id)}; trigger a new run to start again."
        )
    kinds = {f.error_kind for f in files if f.status is FileStatus.FAILED}
    advice = []
    if ErrorKind.MODEL in kinds:
        advice.append(
            f"the model {record.artifact.uri} failed on the files named above: fix the model "
            "(or the spec's model) and start a new run, as a model error is never retried"
        )
    if ErrorKind.INPUT in kinds or record.files_refused:
        advice.append("fix the inputs named above and start a new run, as a bad input is never retried")
    if any(f.retryable for f in files) or not advice:
        advice.append(
            "clear the task to resubmit the files that may pass on another try"
            if advice
            else "fix the inputs named above and clear the task to resubmit only what failed"
        )
    return (
        f"job {record.job_id} {record.status} after {record.attempt} of {record.max_attempts} attempt(s); "
        f"{record.files_failed} of {record.files_total} file(s) failed. What went wrong:\n{record.error}\n"
        f"The outputs of the {record.files_succeeded} file(s) that succeeded are kept, unpublished, under "
        f"{job_staging(record.output_prefix, record.job_id)}; " + "; ".join(advice) + "."
    )


def summarize(record: JobRecord) -> dict[str, Any]:
    seconds = record.duration_seconds()
    return {
        "job_id": record.job_id,
        "status": str(record.status),
        "attempts": record.attempt,
        "files": record.files_total,
        "files_succeeded": record.files_succeeded,
        "files_failed": record.files_failed,
        "rows": record.rows,
        "seconds": round(seconds, 1) if seconds is not None else None,
        "rows_per_second": round(record.rows / seconds) if seconds else None,
        "output_prefix": record.output_prefix,
    }
