"""``shardflow run SPEC --date D``: one pipeline's job outside Airflow, for debugging, through the
DAG's own prepare, submit, settle and publish steps; only the waiting is a plain loop."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from shardflow.compute import get_backend
from shardflow.core.lifecycle import advance_job, submit_job, wait_timeout_seconds
from shardflow.core.ports import JobStorePort, ModelCatalog, ObjectStore
from shardflow.core.prepare import prepare_job
from shardflow.core.publish import publish_job
from shardflow.errors import JobFailed
from shardflow.spec.jobs import job_for_run
from shardflow.spec.pipeline import PipelineSpec
from shardflow.spec.templating import run_date

__all__ = ["run_pipeline"]


def run_pipeline(
    spec: PipelineSpec,
    date: str,
    store: JobStorePort,
    objects: ObjectStore,
    *,
    models: ModelCatalog | None = None,
    output_prefix: str | None = None,
    overwrite: bool = False,
    poll_seconds: float = 2.0,
    say: Callable[[str], None] = print,
    on_job: Callable[[str], None] = lambda job_id: None,
    **backend_config: Any,
) -> dict[str, Any]:
    """Run the spec's job for ``date`` to the end; returns the published summary.

    Each call is a new job (its run id carries the time of the call), so a debugging rerun never
    finds the previous one's record. A local runner ends with this process, however it ends.

    :param on_job: told the job's id as soon as its record exists (a :class:`~shardflow.cli.interrupt.JobGuard`
        claims it, to stop the job on a signal).
    :param overwrite: replace another job's published outputs under the output prefix (without
        it, or the spec's ``output.overwrite``, a second run into one prefix is refused).
    :raises JobFailed: attempts ran out; the record says why.
    """
    if spec.compute.backend == "local":
        backend_config.setdefault("die_with_caller", True)
    run_id = f"shardflow-run__{run_date(date).date()}__{datetime.now(UTC):%Y%m%dT%H%M%S%f}"
    job = job_for_run(spec, run_id=run_id, when=date, output_prefix=output_prefix, overwrite=overwrite)
    backend = get_backend(spec.compute.backend, **backend_config)
    record = prepare_job(job, store, objects, models)
    on_job(record.job_id)
    say(f"job {record.job_id}: {record.files_total} file(s) under {record.input_prefix} -> {record.output_prefix}")
    if record.files_refused:
        say(f"{record.files_refused} key(s) refused and never read, e.g. {record.refused_files[0]}")
    record = submit_job(record.job_id, store, backend)
    say(f"attempt {record.attempt}: processing job {record.current_processing_job} on the {backend.name} backend")
    deadline = time.monotonic() + wait_timeout_seconds(
        spec.retries.max_attempts, spec.compute.max_runtime_seconds, spec.retries.backoff_seconds
    )
    attempt = record.attempt
    while True:
        progress = advance_job(record.job_id, store, backend, objects)
        record = progress.record
        if progress.summary is not None:
            break
        if progress.retry_at is not None:
            say(f"attempt {record.attempt} failed; the next starts at {progress.retry_at:%H:%M:%S}:\n{record.error}")
            time.sleep(max(0.0, (progress.retry_at - datetime.now(UTC)).total_seconds()))
            continue
        if record.attempt != attempt:
            attempt = record.attempt
            say(f"attempt {attempt}: resubmitted the files that did not succeed as {record.current_processing_job}")
        if time.monotonic() > deadline:
            if record.current_processing_job:
                backend.stop(record.current_processing_job)
            raise JobFailed(f"job {record.job_id} still {record.status} after every attempt's runtime: stopped it")
        time.sleep(poll_seconds)
    summary = publish_job(record.job_id, store, objects)
    say(f"published {summary['rows']:,} rows from {summary['files']} file(s) to {summary['output_prefix']}")
    return summary
