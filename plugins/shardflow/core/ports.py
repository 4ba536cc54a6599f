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
from shardflow.core.artifact import ModelArtifact
from shardflow.core.job import JobSpec
from shardflow.core.record import FileRecord, JobRecord, JobStatus
from shardflow.core.s3uri import S3Object, S3Uri
from shardflow.core.staging import attempt_staging

__all__ = [
    "ComputeBackend",
    "JobStorePort",
    "ModelCatalog",
    "ModelPackage",
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
    :param model: the artifact the job record resolved (see :attr:`artifact`).
    :param units: with dynamic distribution, the work units the instances claim from the job
        record (``0``: sharded, each instance gets its ShardedByS3Key share of ``input_keys``).
    """

    job: JobSpec
    job_id: str
    job_table: str
    attempt: int
    job_name: str
    input_keys: tuple[str, ...]
    instance_count: int
    model: ModelArtifact | None = None
    units: int = 0

    @classmethod
    def for_attempt(
        cls,
        job: JobSpec,
        *,
        job_id: str,
        job_table: str,
        attempt: int,
        job_name: str,
        input_keys: tuple[str, ...],
        model: ModelArtifact | None = None,
        units: int = 0,
    ) -> ProcessingRequest:
        """The request of one attempt; never more instances than objects (or, dynamic, than
        units), since an idle instance is paid for nothing."""
        count = job.compute.instances_for(units or len(input_keys))
        return cls(job, job_id, job_table, attempt, job_name, input_keys, count, model, units)

    @property
    def dynamic(self) -> bool:
        """Whether the instances claim units from the job record instead of receiving a share."""
        return self.units > 0

    @property
    def artifact(self) -> ModelArtifact:
        """The model to load: the one prepare resolved, or the spec's own ``model.uri``."""
        return self.model or ModelArtifact.of_spec(self.job.model)

    @property
    def staging_prefix(self) -> S3Uri:
        """Where this attempt's outputs go (never the output prefix itself: publish promotes
        them from here, see :mod:`shardflow.core.staging`)."""
        return attempt_staging(self.job.output.prefix, self.job_id, self.attempt)

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
            "model": None if self.model is None else self.model.model_dump(mode="json"),
            "units": self.units,
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
            model=ModelArtifact.model_validate(data["model"]) if data.get("model") else None,
            units=int(data.get("units", 0)),
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

    def create_job(self, record: JobRecord, files: Iterable[FileRecord], units: Iterable[Any] = ()) -> JobRecord:
        """Write a new job with its files and (dynamic distribution) its work units
        (:class:`~shardflow.core.units.WorkUnit`); an existing job is returned unchanged."""

    def list_units(self, job_id: str) -> list[Any]:
        """The job's work units (:class:`~shardflow.core.units.WorkUnit`), in index order."""

    def get_job(self, job_id: str) -> JobRecord: ...

    def transition(self, record: JobRecord, to: JobStatus, **changes: Any) -> JobRecord: ...

    def list_files(self, job_id: str) -> list[FileRecord]: ...

    def record_file_results(self, job_id: str, results: Iterable[FileRecord], attempt: int | None = None) -> bool:
        """Store file outcomes. With ``attempt``, only while the job is at that attempt and still
        SUBMITTED or RUNNING: a superseded or settled attempt's results are refused (``False``)."""

    def heartbeat(self, job_id: str, attempt: int, files: int = 0, rows: int = 0) -> bool:
        """Record a beat and progress; refused (``False``) under the same fence."""


@dataclass(frozen=True)
class ModelPackage:
    """One version of a model in the SageMaker Model Registry, as resolution needs it.

    :param sha256: the package's ``CustomerMetadataProperties["sha256"]``, as written (``None``
        when it has none).
    """

    arn: str
    group: str
    version: int
    model_data_url: str
    sha256: str | None


class ModelCatalog(Protocol):
    """Where models are found by name (:class:`shardflow.aws.models.SageMakerModelCatalog`)."""

    def training_job_model(self, name: str) -> str:
        """The ``model.tar.gz`` URI of a Completed training job.

        :raises ResourceError: no such job, or it has not completed (the message says its status).
        """

    def newest_package(self, group: str, status: str) -> ModelPackage:
        """The newest package of ``group`` with approval ``status``.

        :raises ResourceError: no such group, or no package in it with that status.
        """


class ObjectStore(Protocol):
    """The few object operations the lifecycle needs (:class:`shardflow.aws.s3.S3ObjectStore`)."""

    def list(self, prefix: S3Uri) -> Iterator[S3Object]:
        """Every object under ``prefix``, in key order."""

    def read(self, uri: S3Uri, start: int | None = None, end: int | None = None) -> bytes:
        """The object's bytes; with ``start`` and ``end``, only that inclusive range."""

    def download(self, uri: S3Uri, into: IO[bytes]) -> None:
        """Stream the object into an open binary file."""

    def put(self, uri: S3Uri, body: bytes, *, create_only: bool = False) -> None:
        """Write the object; with ``create_only``, refuse to replace one (:class:`ObjectExists`)."""

    def copy(self, source: S3Uri, target: S3Uri, *, create_only: bool) -> str:
        """Copy inside the store (no bytes pass through this process) and return the hex sha256 of
        the new object, as the store computed it.

        :param create_only: refuse to replace an object at ``target`` (:class:`ObjectExists`).
        """

    def delete_objects(self, uris: Iterable[S3Uri]) -> int:
        """Delete every object named (a missing one is no error); returns how many were named."""
