"""The trigger behind the job sensor: polls the job record from the triggerer, holding no worker."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook
from airflow.triggers.base import BaseTrigger, TriggerEvent

from shardflow.airflow.hooks import backend_from_config
from shardflow.aws.jobstore_async import JobRecordReader, read_job
from shardflow.core.record import JobStatus

__all__ = ["JobTrigger"]

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
