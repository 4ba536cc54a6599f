"""The life of one job, step by step: prepare, submit (or reconnect), settle, publish.

Plain functions over a job store, an S3 client and a compute backend; the Airflow operators
and the sensor are thin wrappers around them, and ``shardflow run`` calls them without Airflow.
"""

from __future__ import annotations

import hashlib
import io
import json
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow.parquet as pq

from shardflow.compute import (
    ComputeBackend,
    ProcessingJobExists,
    ProcessingRequest,
    ProcessingRequestRefused,
    ProcessingState,
)
from shardflow.jobs import FileRecord, FileStatus, JobRecord, JobStatus, JobStore, parse_time
from shardflow.planning import input_suffixes, job_id_for_run, processing_job_name
from shardflow.s3 import S3Uri, iter_objects

__all__ = [
    "Progress",
    "advance_job",
    "failure_message",
    "JobFailed",
    "JobPlan",
    "PrepareError",
    "PublishError",
    "prepare_job",
    "publish_job",
    "retry_at",
    "settle_job",
    "submit_job",
    "summarize",
]


class PrepareError(ValueError):
    """The job cannot start: no inputs, a model that does not match, inputs that lack features."""


class JobFailed(RuntimeError):
    """The job ended without every file predicted; the message lists what failed and why."""


class PublishError(RuntimeError):
    """The outputs do not add up to one output per input; nothing was marked complete."""


@dataclass(frozen=True)
class JobPlan:
    """A job as the pipeline asks for it, with every template already rendered."""

    pipeline: str
    dag_id: str
    run_id: str
    model_uri: str
    model_sha256: str
    input_prefix: str
    output_prefix: str
    input_format: str
    output_format: str
    backend: str
    instance_type: str
    instance_count: int
    max_runtime_seconds: int
    max_attempts: int
    backoff_seconds: int = 30
    heartbeat_timeout_seconds: int = 600
    features: tuple[str, ...] | None = None
    passthrough: tuple[str, ...] | None = None
    probability_per_class: bool = False
    backend_settings: dict[str, Any] | None = None


class _S3RangeFile(io.RawIOBase):
    """A seekable read-only view of an S3 object by ranged GETs, so a Parquet footer can be read
    without downloading the file."""

    def __init__(self, s3: Any, uri: S3Uri, size: int) -> None:
        self.s3, self.uri, self.size, self.pos = s3, uri, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self.pos = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.size}[whence] + offset
        return self.pos

    def tell(self) -> int:
        return self.pos

    def readinto(self, buffer: Any) -> int:
        if self.pos >= self.size or not len(buffer):
            return 0
        end = min(self.pos + len(buffer), self.size) - 1
        data = self.s3.get_object(Bucket=self.uri.bucket, Key=self.uri.key, Range=f"bytes={self.pos}-{end}")[
            "Body"
        ].read()
        buffer[: len(data)] = data
        self.pos += len(data)
        return len(data)


def _load_verified_model(s3: Any, uri: S3Uri, expected_sha256: str) -> Any:
    """Download the model, check its sha256, and only then unpickle it."""
    import joblib

    with tempfile.NamedTemporaryFile(suffix=".joblib") as handle:
        s3.download_fileobj(uri.bucket, uri.key, handle)
        handle.flush()
        handle.seek(0)
        actual = hashlib.file_digest(handle, "sha256").hexdigest()
        if actual != expected_sha256:
            raise PrepareError(
                f"model {uri} has sha256 {actual} but the spec expects {expected_sha256}: "
                "if the new artifact is intended, put its sha256 in the spec's model.sha256; it was not loaded"
            )
        return joblib.load(handle.name)


def _check_features(s3: Any, plan: JobPlan, model: Any, first: S3Uri, size: int) -> None:
    names = getattr(model, "feature_names_in_", None)
    features = [str(n) for n in names] if names is not None else list(plan.features or ())
    if not features:
        raise PrepareError(
            f"model {plan.model_uri} does not record its feature names: list them in the spec's `features`"
        )
    if plan.input_format != "parquet":
        return  # text formats are checked file by file by the processing script
    schema = pq.ParquetFile(_S3RangeFile(s3, first, size)).schema_arrow
    missing = [name for name in features if name not in schema.names]
    if missing:
        raise PrepareError(
            f"{first} lacks the model's feature column(s) {', '.join(missing)} (it has {', '.join(schema.names)}): "
            "fix the input data or the spec's model"
        )


def prepare_job(plan: JobPlan, store: JobStore, s3: Any) -> JobRecord:
    """List the inputs, check the model against them, and write the job record (once per run)."""
    job_id = job_id_for_run(plan.pipeline, plan.dag_id, plan.run_id)
    prefix = S3Uri.parse(plan.input_prefix).as_prefix()
    suffixes = input_suffixes(plan.input_format)
    objects = [o for o in iter_objects(s3, prefix) if o.key.endswith(suffixes) and o.size > 0]
    if not objects:
        raise PrepareError(
            f"no {plan.input_format} files ({', '.join(suffixes)}) under {prefix}: "
            "check the spec's input.prefix and the run's date"
        )
    model = _load_verified_model(s3, S3Uri.parse(plan.model_uri), plan.model_sha256)
    _check_features(s3, plan, model, S3Uri(prefix.bucket, objects[0].key), objects[0].size)
    record = JobRecord(
        job_id=job_id,
        pipeline=plan.pipeline,
        dag_id=plan.dag_id,
        run_id=plan.run_id,
        model_uri=plan.model_uri,
        model_sha256=plan.model_sha256,
        input_prefix=str(prefix),
        output_prefix=str(S3Uri.parse(plan.output_prefix).as_prefix()),
        input_format=plan.input_format,
        output_format=plan.output_format,
        backend=plan.backend,
        compute={
            "instance_type": plan.instance_type,
            "instance_count": plan.instance_count,
            "max_runtime_seconds": plan.max_runtime_seconds,
            "features": list(plan.features) if plan.features else None,
            "passthrough": list(plan.passthrough) if plan.passthrough is not None else None,
            "probability_per_class": plan.probability_per_class,
            "backend_settings": plan.backend_settings,
        },
        max_attempts=plan.max_attempts,
        backoff_seconds=plan.backoff_seconds,
        heartbeat_timeout_seconds=plan.heartbeat_timeout_seconds,
    )
    files = [FileRecord(key=o.key[len(prefix.key) :], size=o.size) for o in objects]
    return store.create_job(record, files)


def _request(record: JobRecord, name: str, files: Sequence[FileRecord], table: str) -> ProcessingRequest:
    prefix = S3Uri.parse(record.input_prefix)
    compute = record.compute
    return ProcessingRequest(
        job_name=name,
        input_prefix=record.input_prefix,
        input_keys=tuple(prefix.key + f.key for f in files),
        model_uri=record.model_uri,
        model_sha256=record.model_sha256,
        output_prefix=record.output_prefix,
        input_format=record.input_format,
        output_format=record.output_format,
        instance_type=compute["instance_type"],
        # Never more instances than files: an idle instance is paid for nothing.
        instance_count=max(1, min(compute["instance_count"], len(files))),
        max_runtime_seconds=compute["max_runtime_seconds"],
        features=tuple(compute["features"]) if compute.get("features") else None,
        passthrough=tuple(compute["passthrough"]) if compute.get("passthrough") is not None else None,
        probability_per_class=bool(compute.get("probability_per_class")),
        environment={
            "SHARDFLOW_JOB_ID": record.job_id,
            "SHARDFLOW_JOB_TABLE": table,
            "SHARDFLOW_ATTEMPT": str(record.attempt),
        },
        backend_settings=compute.get("backend_settings") or {},
    )


def submit_job(job_id: str, store: JobStore, backend: ComputeBackend) -> JobRecord:
    """Start the job's next attempt, or reconnect to the one already running.

    The processing job's name is stored in the record before the job is started, so a retried
    task finds it and never pays twice; a new attempt covers only the files that did not succeed.
    """
    record = store.get_job(job_id)
    if record.status is JobStatus.SUCCEEDED:
        return record
    if record.status in (JobStatus.SUBMITTED, JobStatus.RUNNING):
        name = record.current_processing_job
        assert name is not None
        if backend.describe(name) is None:  # recorded, but the task died before starting it
            files = [f for f in store.list_files(job_id) if f.status is not FileStatus.SUCCEEDED]
            _start(store, backend, record, _request(record, name, files, store.table))
        return record
    if record.status is JobStatus.CANCELLED:
        raise JobFailed(f"job {job_id} was cancelled")
    if record.status is JobStatus.FAILED and record.attempt >= record.max_attempts:
        raise JobFailed(f"job {job_id} failed after {record.attempt} attempt(s): {record.error}")
    files = [f for f in store.list_files(job_id) if f.status is not FileStatus.SUCCEEDED]
    attempt = record.attempt + 1
    name = processing_job_name(job_id, attempt)
    record = store.transition(
        record,
        JobStatus.SUBMITTED,
        attempt=attempt,
        processing_jobs=[*record.processing_jobs, name],
        attempt_files=len(files),
        progress_files=0,
        progress_rows=0,
        heartbeat_at=None,
        error=None,
    )
    _start(store, backend, record, _request(record, name, files, store.table))
    return record


def _start(store: JobStore, backend: ComputeBackend, record: JobRecord, request: ProcessingRequest) -> None:
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


def retry_at(record: JobRecord) -> datetime:
    """When a failed attempt may be resubmitted: exponential backoff from its end, at most an hour."""
    delay = min(record.backoff_seconds * 2 ** max(record.attempt - 1, 0), 3600)
    return parse_time(record.finished_at or record.updated_at) + timedelta(seconds=delay)


def _unuploaded(files: list[FileRecord], s3: Any, output_prefix: str) -> list[FileRecord]:
    """Files marked SUCCEEDED whose output is not in S3: an attempt that did not complete never
    uploaded them (outputs are uploaded at the end of a job), so they must be done again."""
    output = S3Uri.parse(output_prefix)
    present = {o.key[len(output.key) :] for o in iter_objects(s3, output)}
    return [f for f in files if f.status is FileStatus.SUCCEEDED and f.output_key not in present]


def settle_job(job_id: str, store: JobStore, backend: ComputeBackend, s3: Any) -> JobRecord:
    """Bring the record in line with the backend once the processing job has ended, or stop a
    job whose script has gone silent for longer than the heartbeat timeout.

    The record says what each file did; the backend says whether the job as a whole ended and
    why; S3 says which outputs really arrived. A job is SUCCEEDED only when the backend
    completed and every file's output is there.
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
            f"(heartbeat_timeout_seconds={record.heartbeat_timeout_seconds}); it was stopped"
        )
    elif status is None:
        reasons.append(f"processing job {name} is unknown to the {backend.name} backend")
    elif status.state is not ProcessingState.COMPLETED:
        reasons.append(f"processing job {name} {status.state}: {status.failure_reason or 'no reason given'}")

    files = store.list_files(job_id)
    lost = _unuploaded(files, s3, record.output_prefix)
    if lost:
        how = "ended without completing" if reasons else "completed but its outputs are missing"
        redo = [
            replace(f, status=FileStatus.PENDING, error=f"output {f.output_key} never reached S3 ({name} {how})")
            for f in lost
        ]
        store.record_file_results(job_id, redo)
        by_key = {f.key: f for f in redo}
        files = [by_key.get(f.key, f) for f in files]
    failed = [f for f in files if f.status is FileStatus.FAILED]
    pending = [f for f in files if f.status is FileStatus.PENDING]
    counts = {
        "files_succeeded": sum(1 for f in files if f.status is FileStatus.SUCCEEDED),
        "files_failed": len(failed),
        "rows": sum(f.rows for f in files if f.status is FileStatus.SUCCEEDED),
    }
    if not reasons and not failed and not pending:
        if record.status is JobStatus.SUBMITTED:
            record = store.transition(record, JobStatus.RUNNING)
        return store.transition(record, JobStatus.SUCCEEDED, **counts)
    reasons += [f"{f.key}: {f.error}" for f in failed]
    if pending:
        reasons.append(
            f"{len(pending)} file(s) have no result, e.g. {pending[0].key}: {pending[0].error or 'never reported'}"
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


def advance_job(job_id: str, store: JobStore, backend: ComputeBackend, s3: Any) -> Progress:
    """The one place where a job's fate is decided, for the sensor and for ``shardflow run``.

    Settles the record; a succeeded job gets its summary; a failed attempt with attempts left is
    resubmitted (only what did not succeed) once its backoff has passed.

    :raises JobFailed: attempts are exhausted, or the job was cancelled.
    """
    record = settle_job(job_id, store, backend, s3)
    if record.status is JobStatus.SUCCEEDED:
        return Progress(record, summary=summarize(record))
    if record.status is JobStatus.FAILED and record.attempt < record.max_attempts:
        when = retry_at(record)
        if when > datetime.now(UTC):
            return Progress(record, retry_at=when)
        return Progress(submit_job(job_id, store, backend))
    if record.status in (JobStatus.FAILED, JobStatus.CANCELLED):
        raise JobFailed(failure_message(record))
    return Progress(record)


def failure_message(record: JobRecord) -> str:
    """What a user reads when a job has failed for good: what failed, what is kept, what to do."""
    return (
        f"job {record.job_id} {record.status} after {record.attempt} of {record.max_attempts} attempt(s); "
        f"{record.files_failed} of {record.files_total} file(s) failed. What went wrong:\n{record.error}\n"
        f"The outputs of the {record.files_succeeded} file(s) that succeeded are kept under {record.output_prefix}; "
        "fix the inputs named above and clear the task to resubmit only what failed."
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


def publish_job(job_id: str, store: JobStore, s3: Any) -> dict[str, Any]:
    """Check that the outputs list every input exactly once, then write ``_manifest.json`` and
    ``_SUCCESS``. Reads the per-instance manifests of this job's processing jobs only."""
    record = store.get_job(job_id)
    if record.status is not JobStatus.SUCCEEDED:
        raise PublishError(f"job {job_id} is {record.status}, not SUCCEEDED: nothing to publish")
    output = S3Uri.parse(record.output_prefix)
    listed = {o.key[len(output.key) :]: o.size for o in iter_objects(s3, output)}
    entries: dict[str, dict[str, Any]] = {}
    for name in record.processing_jobs:  # a later attempt's entry replaces an earlier one
        for key in sorted(k for k in listed if k.startswith(f"_manifests/{name}-")):
            manifest = json.loads(s3.get_object(Bucket=output.bucket, Key=output.key + key)["Body"].read())
            for entry in manifest["files"]:
                entries[entry["input"]] = entry
    inputs = {f.key for f in store.list_files(job_id)}
    problems = [f"no output for input {k}" for k in sorted(inputs - entries.keys())]
    problems += [f"output for {k} is not an input of this job" for k in sorted(entries.keys() - inputs)]
    problems += [
        f"{e['output']} (for {k}) is missing from S3" for k, e in sorted(entries.items()) if e["output"] not in listed
    ]
    outputs = [e["output"] for e in entries.values()]
    problems += [f"{o} is written by more than one input" for o in sorted({o for o in outputs if outputs.count(o) > 1})]
    if problems:
        raise PublishError(
            f"job {job_id}: outputs under {output} do not match its inputs:\n" + "\n".join(problems[:20])
        )
    rows = sum(e["rows"] for e in entries.values())
    if rows != record.rows:
        raise PublishError(f"job {job_id}: manifests count {rows} rows but the job record counts {record.rows}")
    manifest = {"job_id": job_id, "files": [entries[k] for k in sorted(entries)], "rows": rows}
    s3.put_object(Bucket=output.bucket, Key=output.key + "_manifest.json", Body=json.dumps(manifest, indent=1).encode())
    s3.put_object(Bucket=output.bucket, Key=output.key + "_SUCCESS", Body=b"")
    return summarize(record)
