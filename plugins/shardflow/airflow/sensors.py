"""The sensors: the job sensor waits on the job record, settles it when the processing job ends
or goes silent, and resubmits the files that did not succeed, with backoff, while attempts
remain; the input sensor waits for a run's input to land before its job is prepared."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import Any

from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook
from airflow.providers.standard.triggers.temporal import DateTimeTrigger
from airflow.sdk import BaseSensorOperator, Context, PokeReturnValue

from shardflow.airflow.compat import AirflowFailException, AirflowSensorTimeout
from shardflow.airflow.hooks import ShardflowHook
from shardflow.airflow.operators import final_failures, run_moment
from shardflow.airflow.triggers import InputTrigger, JobTrigger
from shardflow.aws.s3 import S3ObjectStore
from shardflow.core.arrival import Arrival
from shardflow.core.lifecycle import advance_job, wait_timeout_seconds
from shardflow.core.s3uri import S3Uri
from shardflow.errors import JobNotFound
from shardflow.spec.templating import render_prefix

__all__ = ["InputSensor", "JobSensor"]


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


class InputSensor(BaseSensorOperator):
    """Wait until a run's input has arrived: the first task of a pipeline whose spec has
    ``input.wait``. Returns the address of what arrived.

    Looks once on the worker, then (deferrable, the default) waits in the triggerer, holding no
    worker slot; with ``deferrable=False`` it is a plain poke/reschedule sensor. After ``timeout``
    seconds it fails for good (no task retry), naming the prefix and what it waited for.

    :param prefix: the spec's input prefix, rendered for the run as the prepare step renders it
        (see :func:`~shardflow.airflow.operators.run_moment`).
    :param input_format: the input's format: without a marker, the first non-empty file of it.
    :param marker: the key under the prefix that says the input is complete (``_SUCCESS``).
    :param aws_conn_id: the Airflow connection to AWS.
    :param deferrable: wait in the triggerer.
    """

    def __init__(
        self,
        *,
        prefix: str,
        input_format: str,
        marker: str | None = None,
        aws_conn_id: str = "aws_default",
        deferrable: bool = True,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("poke_interval", 30)
        super().__init__(**kwargs)
        self.prefix = prefix
        self.input_format = input_format
        self.marker = marker
        self.aws_conn_id = aws_conn_id
        self.deferrable = deferrable

    @cached_property
    def objects(self) -> S3ObjectStore:
        return S3ObjectStore(AwsBaseHook(aws_conn_id=self.aws_conn_id, client_type="s3").get_conn())

    def execute(self, context: Context) -> Any:
        arrival = self._arrival(context)
        found = self._find(arrival)
        if found is not None:
            return found
        if not self.deferrable:
            try:
                return super().execute(context)
            except AirflowSensorTimeout:
                raise AirflowFailException(arrival.timeout_message(self.timeout)) from None
        deadline = datetime.now(UTC) + timedelta(seconds=self.timeout)
        self.log.info("waiting until %s for %s", deadline.isoformat(timespec="seconds"), arrival.describe())
        self.defer(
            trigger=InputTrigger(
                prefix=str(arrival.prefix),
                input_format=self.input_format,
                marker=self.marker,
                aws_conn_id=self.aws_conn_id,
                deadline=deadline.isoformat(),
                poll_interval=self.poke_interval,
            ),
            method_name="execute_complete",
        )

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> str:
        payload = event if isinstance(event, dict) else {}
        status = payload.get("status")
        if status == "arrived":
            self.log.info("input arrived: %s", payload["key"])
            return str(payload["key"])
        if status == "timeout":
            raise AirflowFailException(self._arrival(context).timeout_message(self.timeout))
        if status == "error":
            raise AirflowFailException(str(payload["message"]))
        raise AirflowFailException(f"the input trigger sent an event this sensor does not know: {event!r}")

    def poke(self, context: Context) -> bool | PokeReturnValue:
        found = self._find(self._arrival(context))
        return PokeReturnValue(is_done=found is not None, xcom_value=found)

    def _arrival(self, context: Context) -> Arrival:
        prefix = S3Uri.parse(render_prefix(self.prefix, run_moment(context)))
        return Arrival(prefix, self.input_format, self.marker)

    def _find(self, arrival: Arrival) -> str | None:
        """The address of what arrived, or ``None``; a missing bucket or a refused listing fails at once."""
        with final_failures():
            found = arrival.find(self.objects)
        if found is None:
            return None
        self.log.info("input arrived: %s", S3Uri(arrival.prefix.bucket, found.key))
        return str(S3Uri(arrival.prefix.bucket, found.key))
