"""The compute seam: submit, describe and stop a processing job, whatever runs it."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = [
    "ComputeBackend",
    "ProcessingJobExists",
    "ProcessingRequestRefused",
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
    """Everything one processing job needs; the backend turns it into its own request.

    :param input_keys: the full S3 keys of the objects to process (under ``input_prefix``);
        a resubmission lists only the files that did not succeed.
    :param environment: variables the processing script gets (the job id and table it reports to).
    :param backend_settings: what only one backend understands, as plain JSON-ready values: for
        ``sagemaker``, the spec's ``compute.sagemaker`` block (image, role, volume, VPC, tags...).
    """

    job_name: str
    input_prefix: str
    input_keys: tuple[str, ...]
    model_uri: str
    model_sha256: str
    output_prefix: str
    input_format: str
    output_format: str
    instance_type: str
    instance_count: int
    max_runtime_seconds: int
    features: tuple[str, ...] | None = None
    passthrough: tuple[str, ...] | None = None
    probability_per_class: bool = False
    environment: dict[str, str] = field(default_factory=dict)
    backend_settings: dict[str, Any] = field(default_factory=dict)

    def script_arguments(self) -> list[str]:
        """The command-line options the processing script gets after its SageMaker paths."""
        args = ["--model-sha256", self.model_sha256, "--input-format", self.input_format]
        args += ["--output-format", self.output_format]
        if self.features:
            args += ["--features", ",".join(self.features)]
        if self.passthrough is not None:
            args += ["--passthrough", ",".join(self.passthrough)]
        if self.probability_per_class:
            args.append("--probability-per-class")
        return args


class ProcessingRequestRefused(ValueError):
    """The backend will not run this request as it stands (a bad setting): retrying cannot help."""


class ProcessingJobExists(RuntimeError):
    """A job of that name was submitted already; describe it instead of submitting again."""


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
