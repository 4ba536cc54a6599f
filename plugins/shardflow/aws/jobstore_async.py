"""The job table read from an event loop: the trigger's batched, strongly consistent reads.

Part of the job store (:mod:`shardflow.aws.jobstore` owns the item format); takes any async
DynamoDB client factory, such as Airflow's ``AwsBaseHook(...).get_async_conn``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

from shardflow.aws.job_items import job_from_item, job_id_of_item, job_key
from shardflow.core.record import JobRecord

__all__ = ["AsyncClientFactory", "JobRecordReader", "read_job"]

#: Returns an async context manager that yields a low-level DynamoDB client (aiobotocore).
AsyncClientFactory = Callable[[], Awaitable[Any]]


class JobRecordReader:
    """Shared by every JobTrigger waiting in one triggerer event loop on one table: gathers their
    reads for a moment and sends them as BatchGetItem calls of up to 100 keys over one client, so
    a thousand waiting jobs cost ten requests per poll, not a thousand."""

    WINDOW_SECONDS = 0.05
    _shared: ClassVar[dict[tuple[int, str, str], JobRecordReader]] = {}

    def __init__(self, connect: AsyncClientFactory, key: str, table: str) -> None:
        self.connect = connect
        self.key = key
        self.table = table
        self._waiting: dict[str, list[asyncio.Future[dict[str, Any] | None]]] = {}
        self._users = 0
        self._client: Any = None
        self._client_context: Any = None
        self._flusher: asyncio.Task[None] | None = None

    @classmethod
    def shared(cls, connect: AsyncClientFactory, key: str, table: str) -> JobRecordReader:
        """The reader of ``table`` in this event loop; ``key`` names the credentials ``connect``
        uses (e.g. the Airflow connection id), so readers with different ones stay apart."""
        shared_key = (id(asyncio.get_running_loop()), key, table)
        if shared_key not in cls._shared:
            cls._shared[shared_key] = cls(connect, key, table)
        return cls._shared[shared_key]

    async def __aenter__(self) -> JobRecordReader:
        self._users += 1
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._users -= 1
        if self._users == 0:
            self._shared.pop((id(asyncio.get_running_loop()), self.key, self.table), None)
            if self._client_context is not None:
                await self._client_context.__aexit__(None, None, None)
                self._client = self._client_context = None

    async def get(self, job_id: str) -> JobRecord | None:
        """The job's record, read strongly consistent, or ``None`` if there is none."""
        item = await self._get_item(job_id)
        return None if item is None else job_from_item(item)

    async def _get_item(self, job_id: str) -> dict[str, Any] | None:
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
            self._client_context = await self.connect()
            self._client = await self._client_context.__aenter__()
        items: dict[str, dict[str, Any]] = {}
        delay = 0.05
        while keys:
            response = await self._client.batch_get_item(
                RequestItems={self.table: {"Keys": keys, "ConsistentRead": True}}
            )
            for item in response["Responses"].get(self.table, []):
                items[job_id_of_item(item)] = item
            keys = response.get("UnprocessedKeys", {}).get(self.table, {}).get("Keys", [])
            if keys:  # throttled: back off, then ask again for what was left
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        return items


async def read_job(connect: AsyncClientFactory, table: str, job_id: str) -> JobRecord | None:
    """One strongly consistent read of a job, outside a reader's batching (a trigger's on_kill)."""
    async with await connect() as client:
        response = await client.get_item(TableName=table, Key=job_key(job_id), ConsistentRead=True)
    return job_from_item(response["Item"]) if "Item" in response else None
