"""The lifecycle's seams to the world, as small Protocols: the job store (DynamoDB), the object
store (S3) and the compute backend (submit / describe / stop a processing job).

The AWS adapters (:mod:`shardflow.aws`) and the backends (:mod:`shardflow.compute`) implement
them; unit tests implement them in memory.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any, Protocol

from shardflow.contract import ENV_ATTEMPT, ENV_JOB_ID, ENV_JOB_TABLE
from shardflow.core.job import JobSpec
from shardflow.core.record import FileRecord, JobRecord, JobStatus
from shardflow.core.s3uri import S3Object, S3Uri

__all__ = [
    "ComputeBackend",
    "JobStorePort",
    "ObjectStore",
    "ProcessingRequest",
    "ProcessingState",
    "ProcessingStatus",
]


class ProcessingState(enum.StrEnum):
    """SageMaker's processing job states; the local backend reports the same ones."""

    IN_PROGRESS = "InProgress"
    STOPPING = "Stopping"
    COMPLETED = "Completed"
    FAILED = "Failed"
    STOPPED = "Stopped"

    @property
    def is_final(self) -> bool:
        return self in (ProcessingState.COMPLETED, ProcessingState.FAILED, ProcessingState.STOPPED)


@dataclass(frozen=True)
class ProcessingStatus:
    state: ProcessingState
    failure_reason: str | None = None


@dataclass(frozen=True)
class ProcessingRequest:
    """One attempt of a job, as a backend runs it.

    :param job: the job's description, as the record stores it.
    :param job_id: the job record the script reports to.
    :param job_table: the table that holds it.
    :param attempt: the attempt's number, from 1.
    :param job_name: the processing job's name (unique per attempt).
    :param input_keys: the full S3 keys of the objects to process (under the job's input
        prefix); a resubmission lists only the files that did not succeed.
    :param instance_count: the instances of this attempt (see :meth:`for_attempt`).
    """

    job: JobSpec
    job_id: str
    job_table: str
    attempt: int
    job_name: str
    input_keys: tuple[str, ...]
    instance_count: int

    @classmethod
    def for_attempt(
        cls, job: JobSpec, *, job_id: str, job_table: str, attempt: int, job_name: str, input_keys: tuple[str, ...]
    ) -> ProcessingRequest:
        """The request of one attempt; never more instances than objects, since an idle instance
        is paid for nothing."""
        count = max(1, min(job.compute.instance_count, len(input_keys)))
        return cls(job, job_id, job_table, attempt, job_name, input_keys, count)

    def environment(self) -> dict[str, str]:
        """What the processing script needs to report to the job record."""
        return {ENV_JOB_ID: self.job_id, ENV_JOB_TABLE: self.job_table, ENV_ATTEMPT: str(self.attempt)}

    def to_json(self) -> dict[str, Any]:
        return {
            "job": self.job.model_dump(mode="json"),
            "job_id": self.job_id,
            "job_table": self.job_table,
            "attempt": self.attempt,
            "job_name": self.job_name,
            "input_keys": list(self.input_keys),
            "instance_count": self.instance_count,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ProcessingRequest:
        return cls(
            job=JobSpec.model_validate(data["job"]),
            job_id=data["job_id"],
            job_table=data["job_table"],
            attempt=int(data["attempt"]),
            job_name=data["job_name"],
            input_keys=tuple(data["input_keys"]),
            instance_count=int(data["instance_count"]),
        )


class ComputeBackend(Protocol):
    """What Shardflow asks of anything that runs processing jobs."""

    name: str

    def submit(self, request: ProcessingRequest) -> None:
        """Start the job.

        :raises ProcessingJobExists: the name is taken.
        :raises ProcessingRequestRefused: a setting makes the request one the backend refuses.
        """

    def describe(self, job_name: str) -> ProcessingStatus | None:
        """The job's state, or ``None`` when no job of that name exists."""

    def stop(self, job_name: str) -> None:
        """Ask the job to stop; a job that has ended already is left as it is."""

    def config(self) -> dict[str, Any]:
        """Serializable settings that rebuild this backend elsewhere (in the triggerer)."""


class JobStorePort(Protocol):
    """The job table, as the lifecycle uses it (:class:`shardflow.aws.jobstore.JobStore`)."""

    table: str

    def create_job(self, record: JobRecord, files: Iterable[FileRecord]) -> JobRecord: ...

    def get_job(self, job_id: str) -> JobRecord: ...

    def transition(self, record: JobRecord, to: JobStatus, **changes: Any) -> JobRecord: ...

    def list_files(self, job_id: str) -> list[FileRecord]: ...

    def record_file_results(self, job_id: str, results: Iterable[FileRecord]) -> None: ...

    def heartbeat(self, job_id: str, attempt: int, files: int = 0, rows: int = 0) -> bool: ...


class ObjectStore(Protocol):
    """The few object operations the lifecycle needs (:class:`shardflow.aws.s3.S3ObjectStore`)."""

    def list(self, prefix: S3Uri) -> Iterator[S3Object]:
        """Every object under ``prefix``, in key order."""

    def read(self, uri: S3Uri, start: int | None = None, end: int | None = None) -> bytes:
        """The object's bytes; with ``start`` and ``end``, only that inclusive range."""

    def download(self, uri: S3Uri, into: IO[bytes]) -> None:
        """Stream the object into an open binary file."""

    def put(self, uri: S3Uri, body: bytes) -> None: ...
