"""The job sensor: waits on the job record, settles it when the processing job ends or goes
silent, and resubmits the files that did not succeed, with backoff, while attempts remain."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from functools import cached_property
from typing import Any

from airflow.providers.standard.triggers.temporal import DateTimeTrigger
from airflow.sdk import BaseSensorOperator, Context, PokeReturnValue
from airflow.sdk.exceptions import AirflowFailException

from shardflow.airflow.hooks import ShardflowHook
from shardflow.airflow.operators import final_failures
from shardflow.airflow.triggers import JobTrigger
from shardflow.core.lifecycle import advance_job, wait_timeout_seconds
from shardflow.errors import JobNotFound

__all__ = ["JobSensor"]


class JobSensor(BaseSensorOperator):
    """Wait for a Shardflow job; return its summary when it succeeds.

    Deferrable by default: the wait runs in the triggerer and holds no worker slot. With
    ``deferrable=False`` it is a plain poke/reschedule sensor.

    :param job_id: the job to wait for (templated; usually the prepare task's return value).
    :param backend: the compute backend the job runs on.
    :param job_table: the DynamoDB job table.
    :param aws_conn_id: the Airflow connection to AWS.
    :param deferrable: wait in the triggerer.
    """

    template_fields: Sequence[str] = ("job_id",)

    def __init__(
        self,
        *,
        job_id: str,
        backend: str,
        job_table: str,
        aws_conn_id: str = "aws_default",
        deferrable: bool = True,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("poke_interval", 10)
        super().__init__(**kwargs)
        self.job_id = job_id
        self.backend = backend
        self.job_table = job_table
        self.aws_conn_id = aws_conn_id
        self.deferrable = deferrable

    @cached_property
    def hook(self) -> ShardflowHook:
        """One hook per task try: its clients are built once, not on every poke."""
        return ShardflowHook(self.aws_conn_id, self.job_table)

    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            self._fit_timeout_to_job()
            return super().execute(context)
        return self._decide_or_defer()

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> Any:
        if isinstance(event, dict) and event.get("status") == "missing":
            raise AirflowFailException(f"job {self.job_id} is not in table {self.job_table}: was it deleted?")
        return self._decide_or_defer()

    def poke(self, context: Context) -> bool | PokeReturnValue:
        decision = self._decide()
        done = isinstance(decision, dict)
        return PokeReturnValue(is_done=done, xcom_value=decision if done else None)

    def on_kill(self) -> None:
        record = self.hook.store.get_job(self.job_id)
        if record.current_processing_job and record.status.is_active:
            self.log.info("stopping processing job %s", record.current_processing_job)
            self.hook.backend(self.backend).stop(record.current_processing_job)

    def _fit_timeout_to_job(self) -> None:
        """Wait as long as the job's own attempts may take: an ad-hoc job's attempts and runtime
        come from its form, which the DAG does not know when it is parsed."""
        try:
            job = self.hook.store.get_job(self.job_id).job
        except JobNotFound:
            return  # the decision reports it
        self.timeout = wait_timeout_seconds(
            job.retries.max_attempts, job.compute.max_runtime_seconds, job.retries.backoff_seconds
        )

    def _decide_or_defer(self) -> Any:
        self._fit_timeout_to_job()
        decision = self._decide()
        if isinstance(decision, dict):
            return decision
        if isinstance(decision, datetime):
            self.log.info("job %s: next attempt at %s", self.job_id, decision.isoformat())
            self.defer(trigger=DateTimeTrigger(moment=decision), method_name="execute_complete")
        backend = self.hook.backend(self.backend)
        self.defer(
            trigger=JobTrigger(
                job_id=self.job_id,
                job_table=self.job_table,
                aws_conn_id=self.aws_conn_id,
                backend=self.backend,
                backend_config=backend.config(),
                poll_interval=self.poke_interval,
            ),
            method_name="execute_complete",
            timeout=timedelta(seconds=self.timeout) if self.timeout else None,
        )

    def _decide(self) -> dict[str, Any] | datetime | None:
        """The one place where a job's fate is decided. Returns its summary when it succeeded,
        the time to resubmit when a failed attempt is backing off, ``None`` while it runs (a
        resubmission included); raises when attempts are exhausted."""
        with final_failures():
            return self._decide_job()

    def _decide_job(self) -> dict[str, Any] | datetime | None:
        progress = advance_job(self.job_id, self.hook.store, self.hook.backend(self.backend), self.hook.objects)
        record = progress.record
        if progress.summary is not None:
            self.log.info("job %s succeeded: %s", self.job_id, progress.summary)
            return progress.summary
        if progress.retry_at is not None:
            self.log.warning("job %s attempt %d failed:\n%s", self.job_id, record.attempt, record.error)
            return progress.retry_at
        self.log.info(
            "job %s %s, attempt %d: %s", self.job_id, record.status, record.attempt, record.current_processing_job
        )
        return None
