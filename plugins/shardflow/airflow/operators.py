"""Thin operators over the core's lifecycle: prepare, submit and publish one job."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from functools import cached_property
from typing import Any

from airflow.sdk import BaseOperator, Context

from shardflow.airflow.compat import AirflowFailException
from shardflow.airflow.hooks import ShardflowHook
from shardflow.core.job import JobSpec
from shardflow.core.lifecycle import submit_job
from shardflow.core.prepare import prepare_job
from shardflow.core.publish import publish_job
from shardflow.errors import DeterministicError, JobFailed
from shardflow.spec.jobs import job_for_run
from shardflow.spec.pipeline import PipelineSpec

__all__ = ["PrepareJobOperator", "PublishJobOperator", "SubmitJobOperator", "final_failures", "prepare_and_report"]


@contextmanager
def final_failures() -> Iterator[None]:
    """A job out of attempts, a spec or input that cannot work, or outputs that do not add up will
    not change on a task retry: fail the task for good, with the job's own message."""
    try:
        yield
    except (JobFailed, DeterministicError) as error:
        raise AirflowFailException(str(error)) from error


def run_moment(context: Context) -> datetime:
    """The moment a run's prefixes are rendered for: its logical date or, for an Asset-triggered
    run (which has none), the time it was queued."""
    logical_date = context.get("logical_date")
    return logical_date if logical_date is not None else context["dag_run"].run_after


def prepare_and_report(job: JobSpec, hook: ShardflowHook, log: Any) -> str:
    """Prepare the job (see :func:`~shardflow.core.prepare.prepare_job`), log what it covers, and
    return its id: the prepare task's result, whichever DAG it is in."""
    with final_failures():
        record = prepare_job(job, hook.store, hook.objects, hook.models)
    log.info(
        "job %s: %d input files under %s -> %s",
        record.job_id,
        record.files_total,
        record.input_prefix,
        record.output_prefix,
    )
    if record.files_refused:
        log.warning(
            "job %s: %d input key(s) refused and never read; the job will fail for them:\n%s",
            record.job_id,
            record.files_refused,
            "\n".join(record.refused_files),
        )
    return record.job_id


class _JobOperator(BaseOperator):
    def __init__(self, *, job_table: str, aws_conn_id: str = "aws_default", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.job_table = job_table
        self.aws_conn_id = aws_conn_id

    @cached_property
    def hook(self) -> ShardflowHook:
        """One hook per task try: its clients are built once, not on every poke."""
        return ShardflowHook(self.aws_conn_id, self.job_table)


class PrepareJobOperator(_JobOperator):
    """List the inputs, check the model (sha256, feature names against the input schema) and
    write the job record. Returns the job id; a rerun of the same DAG run returns the same job.

    :param spec: the pipeline; its prefixes are rendered for the run (see :func:`run_moment`).
    """

    def __init__(self, *, spec: PipelineSpec, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.spec = spec

    def execute(self, context: Context) -> str:
        with final_failures():
            job = job_for_run(self.spec, run_id=context["run_id"], when=run_moment(context), dag_id=self.dag_id)
        return prepare_and_report(job, self.hook, self.log)


class SubmitJobOperator(_JobOperator):
    """Start the job's processing job, or reconnect to the one a previous try started.

    :param job_id: the job (templated).
    :param backend: the compute backend's name.
    """

    template_fields: Sequence[str] = ("job_id",)

    def __init__(self, *, job_id: str, backend: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.job_id = job_id
        self.backend = backend

    def execute(self, context: Context) -> str | None:
        with final_failures():
            record = submit_job(self.job_id, self.hook.store, self.hook.backend(self.backend))
        self.log.info(
            "job %s %s, attempt %d: processing job %s",
            record.job_id,
            record.status,
            record.attempt,
            record.current_processing_job,
        )
        return record.current_processing_job


class PublishJobOperator(_JobOperator):
    """Verify that the outputs list every input exactly once, then write ``_SUCCESS``.

    :param job_id: the job (templated).
    """

    template_fields: Sequence[str] = ("job_id",)

    def __init__(self, *, job_id: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.job_id = job_id

    def execute(self, context: Context) -> dict[str, Any]:
        with final_failures():
            summary = publish_job(self.job_id, self.hook.store, self.hook.objects)
        self.log.info("published %s: %s", summary["output_prefix"], summary)
        return summary
