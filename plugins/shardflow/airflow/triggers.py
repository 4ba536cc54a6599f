"""The triggers behind the sensors: poll the job record, or the run's input prefix, from the
triggerer, holding no worker."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook
from airflow.triggers.base import BaseTrigger, TriggerEvent
from botocore.exceptions import BotoCoreError, ClientError

from shardflow.airflow.hooks import backend_from_config
from shardflow.aws.jobstore_async import JobRecordReader, read_job
from shardflow.aws.s3 import first_object_async
from shardflow.core.arrival import Arrival
from shardflow.core.record import JobStatus
from shardflow.core.s3uri import S3Uri
from shardflow.errors import ResourceError

__all__ = ["InputTrigger", "JobTrigger"]

_SETTLED = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


class JobTrigger(BaseTrigger):
    """Fires once the job needs a decision: its record is settled, its processing job has ended,
    or its script has sent no heartbeat for longer than the job's heartbeat timeout.

    Holds only serializable state and writes nothing, so running it twice is harmless; the
    sensor makes the decision on a worker when the event arrives.

    :param job_id: the job to watch.
    :param job_table: the DynamoDB job table.
    :param aws_conn_id: the Airflow connection to AWS.
    :param backend: the compute backend's name.
    :param backend_config: what the backend's ``config()`` returned.
    :param poll_interval: seconds between polls.
    """

    #: Ask the compute backend for the job's state on every this many polls of the record.
    BACKEND_EVERY = 6

    def __init__(
        self,
        job_id: str,
        job_table: str,
        aws_conn_id: str,
        backend: str,
        backend_config: dict[str, Any],
        poll_interval: float = 10.0,
    ) -> None:
        super().__init__()
        self.job_id = job_id
        self.job_table = job_table
        self.aws_conn_id = aws_conn_id
        self.backend = backend
        self.backend_config = backend_config
        self.poll_interval = poll_interval

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "job_id": self.job_id,
                "job_table": self.job_table,
                "aws_conn_id": self.aws_conn_id,
                "backend": self.backend,
                "backend_config": self.backend_config,
                "poll_interval": self.poll_interval,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        backend = backend_from_config(self.backend, self.backend_config)
        polls = 0
        async with JobRecordReader.shared(self._connect, self.aws_conn_id, self.job_table) as reader:
            while True:
                record = await reader.get(self.job_id)
                if record is None:
                    yield TriggerEvent({"job_id": self.job_id, "status": "missing"})
                    return
                if record.status in _SETTLED:
                    yield TriggerEvent({"job_id": self.job_id, "status": str(record.status)})
                    return
                if record.is_silent():
                    yield TriggerEvent({"job_id": self.job_id, "status": "silent"})
                    return
                # The record tells progress; the backend is asked only now and then, or when every
                # file has reported, so a thousand waiting jobs do not throttle its API.
                all_reported = record.attempt_files and record.progress_files >= record.attempt_files
                if all_reported or polls % self.BACKEND_EVERY == 0:
                    name = record.current_processing_job
                    state = await asyncio.to_thread(backend.describe, name) if name else None
                    if state is None or state.state.is_final:
                        yield TriggerEvent(
                            {"job_id": self.job_id, "status": str(record.status), "processing_job": name}
                        )
                        return
                polls += 1
                await asyncio.sleep(self.poll_interval)

    async def on_kill(self) -> None:
        """The user failed or cleared the deferred task: stop its processing job."""
        record = await read_job(self._connect, self.job_table, self.job_id)
        name = record.current_processing_job if record is not None else None
        if name:
            await asyncio.to_thread(backend_from_config(self.backend, self.backend_config).stop, name)

    async def _connect(self) -> Any:
        return await AwsBaseHook(aws_conn_id=self.aws_conn_id, client_type="dynamodb").get_async_conn()


class InputTrigger(BaseTrigger):
    """Fires once the run's input has arrived (see :class:`~shardflow.core.arrival.Arrival`), or at
    ``deadline`` when it has not, or when S3 refuses the listing for good (no such bucket, access
    denied). A throttled or failed listing is tried again at the next poll.

    :param prefix: the run's input prefix, rendered.
    :param input_format: the input's format.
    :param marker: the key under ``prefix`` that says the input is complete, or ``None``.
    :param aws_conn_id: the Airflow connection to AWS.
    :param deadline: when to give up, an ISO 8601 time with its zone; fixed when the task first
        deferred, so a triggerer that restarts the trigger keeps it.
    :param poll_interval: seconds between listings.
    """

    def __init__(
        self,
        prefix: str,
        input_format: str,
        marker: str | None,
        aws_conn_id: str,
        deadline: str,
        poll_interval: float = 30.0,
    ) -> None:
        super().__init__()
        self.prefix = prefix
        self.input_format = input_format
        self.marker = marker
        self.aws_conn_id = aws_conn_id
        self.deadline = deadline
        self.poll_interval = poll_interval

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "prefix": self.prefix,
                "input_format": self.input_format,
                "marker": self.marker,
                "aws_conn_id": self.aws_conn_id,
                "deadline": self.deadline,
                "poll_interval": self.poll_interval,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        arrival = Arrival(S3Uri.parse(self.prefix), self.input_format, self.marker)
        deadline = datetime.fromisoformat(self.deadline)
        hook = AwsBaseHook(aws_conn_id=self.aws_conn_id, client_type="s3")
        async with await hook.get_async_conn() as client:
            while True:
                try:
                    found = await first_object_async(client, arrival.listing, arrival.is_arrival)
                except ResourceError as error:
                    yield TriggerEvent({"status": "error", "message": str(error)})
                    return
                except (ClientError, BotoCoreError) as error:
                    self.log.warning("listing %s failed, trying again at the next poll: %s", arrival.listing, error)
                    found = None
                if found is not None:
                    yield TriggerEvent({"status": "arrived", "key": str(S3Uri(arrival.prefix.bucket, found.key))})
                    return
                remaining = (deadline - datetime.now(UTC)).total_seconds()
                if remaining <= 0:
                    yield TriggerEvent({"status": "timeout"})
                    return
                self.log.info("waiting for %s (%.0f s left)", arrival.describe(), remaining)
                # The last poll falls on the deadline itself, so input that lands just in time counts.
                await asyncio.sleep(min(self.poll_interval, remaining))
