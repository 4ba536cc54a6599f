"""The trigger behind the job sensor: polls the job record from the triggerer, holding no worker."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, ClassVar

from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook
from airflow.triggers.base import BaseTrigger, TriggerEvent

from shardflow.compute import get_backend
from shardflow.jobs import JobStatus, job_from_item, job_key

__all__ = ["JobTrigger"]

_SETTLED = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


class _RecordPoller:
    """Shared by every JobTrigger waiting in one triggerer event loop on one table: gathers their
    reads for a moment and sends them as BatchGetItem calls of up to 100 keys over one client, so
    a thousand waiting jobs cost ten requests per poll, not a thousand."""

    WINDOW_SECONDS = 0.05
    _shared: ClassVar[dict[tuple[int, str, str], _RecordPoller]] = {}

    def __init__(self, aws_conn_id: str, table: str) -> None:
        self.aws_conn_id = aws_conn_id
        self.table = table
        self._waiting: dict[str, list[asyncio.Future[dict[str, Any] | None]]] = {}
        self._users = 0
        self._client: Any = None
        self._client_context: Any = None
        self._flusher: asyncio.Task[None] | None = None

    @classmethod
    def shared(cls, aws_conn_id: str, table: str) -> _RecordPoller:
        key = (id(asyncio.get_running_loop()), aws_conn_id, table)
        if key not in cls._shared:
            cls._shared[key] = cls(aws_conn_id, table)
        return cls._shared[key]

    async def __aenter__(self) -> _RecordPoller:
        self._users += 1
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._users -= 1
        if self._users == 0:
            self._shared.pop((id(asyncio.get_running_loop()), self.aws_conn_id, self.table), None)
            if self._client_context is not None:
                await self._client_context.__aexit__(None, None, None)
                self._client = self._client_context = None

    async def get(self, job_id: str) -> dict[str, Any] | None:
        """The job's item, read strongly consistent, or ``None`` if there is none."""
        future: asyncio.Future[dict[str, Any] | None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(job_id, []).append(future)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        await asyncio.sleep(self.WINDOW_SECONDS)
        while self._waiting:
            batch = dict(list(self._waiting.items())[:100])
            for job_id in batch:
                del self._waiting[job_id]
            try:
                items = await self._read([job_key(job_id) for job_id in batch])
            except Exception as error:
                for futures in batch.values():
                    for future in futures:
                        if not future.done():
                            future.set_exception(error)
                continue
            for job_id, futures in batch.items():
                for future in futures:
                    if not future.done():  # a cancelled trigger no longer waits
                        future.set_result(items.get(job_id))

    async def _read(self, keys: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        if self._client is None:
            hook = AwsBaseHook(aws_conn_id=self.aws_conn_id, client_type="dynamodb")
            self._client_context = await hook.get_async_conn()
            self._client = await self._client_context.__aenter__()
        items: dict[str, dict[str, Any]] = {}
        delay = 0.05
        while keys:
            response = await self._client.batch_get_item(
                RequestItems={self.table: {"Keys": keys, "ConsistentRead": True}}
            )
            for item in response["Responses"].get(self.table, []):
                items[item["pk"]["S"][len("JOB#") :]] = item
            keys = response.get("UnprocessedKeys", {}).get(self.table, {}).get("Keys", [])
            if keys:  # throttled: back off, then ask again for what was left
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        return items


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
        backend = get_backend(self.backend, **self.backend_config)
        polls = 0
        async with _RecordPoller.shared(self.aws_conn_id, self.job_table) as poller:
            while True:
                item = await poller.get(self.job_id)
                if item is None:
                    yield TriggerEvent({"job_id": self.job_id, "status": "missing"})
                    return
                record = job_from_item(item)
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
        hook = AwsBaseHook(aws_conn_id=self.aws_conn_id, client_type="dynamodb")
        async with await hook.get_async_conn() as client:
            response = await client.get_item(TableName=self.job_table, Key=job_key(self.job_id), ConsistentRead=True)
        if "Item" in response:
            name = job_from_item(response["Item"]).current_processing_job
            if name:
                await asyncio.to_thread(get_backend(self.backend, **self.backend_config).stop, name)
