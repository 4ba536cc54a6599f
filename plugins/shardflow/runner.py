"""``shardflow run SPEC --date D``: one pipeline's job outside Airflow, for debugging, through the
DAG's own prepare, submit, settle and publish steps; only the waiting is a plain loop."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from shardflow.compute import get_backend
from shardflow.jobs import JobStore
from shardflow.lifecycle import JobFailed, JobPlan, advance_job, prepare_job, publish_job, submit_job
from shardflow.spec import PipelineSpec
from shardflow.templating import render_prefix, run_date

__all__ = ["plan_for_date", "plan_for_spec", "run_pipeline"]


def plan_for_spec(
    spec: PipelineSpec, run_id: str = "", input_prefix: str | None = None, output_prefix: str | None = None
) -> JobPlan:
    """The job a spec asks for; the prefixes stay templates unless rendered ones are given."""
    return JobPlan(
        pipeline=spec.name,
        dag_id=spec.dag_id,
        run_id=run_id,
        model_uri=spec.model.uri,
        model_sha256=spec.model.sha256,
        input_prefix=input_prefix or spec.input.prefix,
        output_prefix=output_prefix or spec.output.prefix,
        input_format=spec.input.format,
        output_format=spec.output.format,
        backend=spec.compute.backend,
        instance_type=spec.compute.instance_type,
        instance_count=spec.compute.instance_count,
        max_runtime_seconds=spec.compute.max_runtime_seconds,
        max_attempts=spec.retries.max_attempts,
        backoff_seconds=spec.retries.backoff_seconds,
        heartbeat_timeout_seconds=spec.heartbeat_timeout_seconds,
        features=tuple(spec.features) if spec.features else None,
        passthrough=tuple(spec.passthrough) if spec.passthrough is not None else None,
        probability_per_class=spec.output.probability == "per_class",
        backend_settings=_backend_settings(spec),
    )


def _backend_settings(spec: PipelineSpec) -> dict[str, Any] | None:
    """The chosen backend's own block of the spec, as plain values for the job record."""
    if spec.compute.backend == "sagemaker" and spec.compute.sagemaker is not None:
        return spec.compute.sagemaker.model_dump(mode="json")
    return None


def plan_for_date(spec: PipelineSpec, date: str, run_id: str, output_prefix: str | None = None) -> JobPlan:
    """The job a spec asks for on ``date`` (``YYYY-MM-DD`` or an ISO timestamp), templates rendered."""
    return plan_for_spec(
        spec,
        run_id,
        input_prefix=render_prefix(spec.input.prefix, date),
        output_prefix=output_prefix or render_prefix(spec.output.prefix, date),
    )


def run_pipeline(
    spec: PipelineSpec,
    date: str,
    store: JobStore,
    s3: Any,
    *,
    output_prefix: str | None = None,
    poll_seconds: float = 2.0,
    say: Callable[[str], None] = print,
    **backend_config: Any,
) -> dict[str, Any]:
    """Run the spec's job for ``date`` to the end; returns the published summary.

    Each call is a new job (its run id carries the time of the call), so a debugging rerun never
    finds the previous one's record. :raises JobFailed: attempts ran out; the record says why.
    """
    run_id = f"shardflow-run__{run_date(date).date()}__{datetime.now(UTC):%Y%m%dT%H%M%S%f}"
    plan = plan_for_date(spec, date, run_id, output_prefix)
    backend = get_backend(spec.compute.backend, **backend_config)
    record = prepare_job(plan, store, s3)
    say(f"job {record.job_id}: {record.files_total} file(s) under {record.input_prefix} -> {record.output_prefix}")
    record = submit_job(record.job_id, store, backend)
    say(f"attempt {record.attempt}: processing job {record.current_processing_job} on the {backend.name} backend")
    deadline = time.monotonic() + spec.retries.max_attempts * (
        spec.compute.max_runtime_seconds + spec.retries.backoff_seconds
    )
    attempt = record.attempt
    while True:
        progress = advance_job(record.job_id, store, backend, s3)
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
    summary = publish_job(record.job_id, store, s3)
    say(f"published {summary['rows']:,} rows from {summary['files']} file(s) to {summary['output_prefix']}")
    return summary
