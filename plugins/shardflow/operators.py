"""Thin operators over :mod:`shardflow.lifecycle`: prepare, submit and publish one job."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from functools import cached_property
from typing import TYPE_CHECKING, Any, cast

from airflow.sdk import BaseOperator, Context
from airflow.sdk.exceptions import AirflowFailException

from shardflow.hooks import ShardflowHook
from shardflow.lifecycle import JobFailed, JobPlan, PublishError, prepare_job, publish_job, submit_job
from shardflow.templating import prefix_context

if TYPE_CHECKING:
    import jinja2

__all__ = ["PrepareJobOperator", "PublishJobOperator", "SubmitJobOperator", "final_failures", "prepare_and_report"]


@contextmanager
def final_failures() -> Iterator[None]:
    """A job out of attempts, or outputs that do not add up, will not change on a task retry:
    fail the task for good, with the job's own message."""
    try:
        yield
    except (JobFailed, PublishError) as error:
        raise AirflowFailException(str(error)) from error


def prepare_and_report(plan: JobPlan, hook: ShardflowHook, log: Any) -> str:
    """Prepare the job (see :func:`~shardflow.lifecycle.prepare_job`), log what it covers, and
    return its id: the prepare task's result, whichever DAG it is in."""
    record = prepare_job(plan, hook.store, hook.s3)
    log.info(
        "job %s: %d input files under %s -> %s",
        record.job_id,
        record.files_total,
        record.input_prefix,
        record.output_prefix,
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

    :param plan: the job's settings; ``input_prefix`` and ``output_prefix`` are templated with
        the variables of :data:`shardflow.templating.PREFIX_VARIABLES`, taken from the run's
        logical date or, for an Asset-triggered run, from the time it was queued.
    """

    template_fields: Sequence[str] = ("input_prefix", "output_prefix")

    def __init__(self, *, plan: JobPlan, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.plan = plan
        self.input_prefix = plan.input_prefix
        self.output_prefix = plan.output_prefix

    def render_template_fields(self, context: Context, jinja_env: jinja2.Environment | None = None) -> None:
        if context.get("logical_date") is None:
            # An Asset-triggered run has no logical date: its prefixes use the time it was queued.
            context = cast(Context, {**context, **prefix_context(context["dag_run"].run_after)})
        super().render_template_fields(context, jinja_env)

    def execute(self, context: Context) -> str:
        plan = replace(
            self.plan,
            dag_id=self.dag_id,
            run_id=context["run_id"],
            input_prefix=self.input_prefix,
            output_prefix=self.output_prefix,
        )
        return prepare_and_report(plan, self.hook, self.log)


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
            summary = publish_job(self.job_id, self.hook.store, self.hook.s3)
        self.log.info("published %s: %s", summary["output_prefix"], summary)
        return summary
