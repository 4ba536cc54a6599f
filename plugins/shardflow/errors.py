"""Every error Shardflow raises derives from :class:`ShardflowError`, so a caller catches one name.

Each message says what failed, which input, and what to do. :class:`DeterministicError` marks
the ones no retry can fix (a spec, an input or a model the user must change): an Airflow task
fails at once on them instead of spending its retries.
"""

from __future__ import annotations

__all__ = [
    "AccessDenied",
    "BucketNotFound",
    "ConfigurationError",
    "DeterministicError",
    "IllegalTransition",
    "InvalidProcessingRequest",
    "JobConflict",
    "JobFailed",
    "JobInterrupted",
    "JobNotFound",
    "JobTableNotFound",
    "ModelRefused",
    "ModelUnusable",
    "ObjectExists",
    "ObjectNotFound",
    "PrepareError",
    "ProcessingJobExists",
    "ProcessingRequestRefused",
    "PublishError",
    "ResourceError",
    "ShardflowError",
    "SpecError",
    "UnsafeKey",
]


class ShardflowError(Exception):
    """The root of Shardflow's errors."""


class DeterministicError(ShardflowError):
    """The same input fails the same way every time: fix it, do not retry."""


class SpecError(DeterministicError, ValueError):
    """A pipeline spec or trigger form that cannot be used; the message names the source and every bad field."""


class ConfigurationError(DeterministicError, ValueError):
    """A deployment setting (an environment variable) that cannot be used; the message names it."""


class PrepareError(DeterministicError, ValueError):
    """The job cannot start: no inputs, a model that does not match, inputs that lack features."""


class ModelRefused(PrepareError):
    """A model artifact whose sha256 is not the one the job names; it was not loaded."""


class ModelUnusable(PrepareError):
    """A verified artifact that holds no usable model: an archive with an unsafe member or not
    exactly one model file, or an XGBoost objective that is neither a classifier's nor a regressor's."""


class JobFailed(ShardflowError, RuntimeError):
    """The job ended without every file predicted; the message lists what failed and why."""


class JobInterrupted(JobFailed):
    """``shardflow run`` got SIGINT or SIGTERM: its job was stopped and cancelled.

    :param exit_code: what the command exits with (128 + the signal's number, as a shell expects).
    """

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class PublishError(DeterministicError, RuntimeError):
    """The outputs do not add up to one output per input; nothing was marked complete."""


class JobNotFound(ShardflowError, LookupError):
    """No job record of that id in the job table."""


class IllegalTransition(ShardflowError, ValueError):
    """A status change the job record's state machine does not allow."""


class JobConflict(ShardflowError, RuntimeError):
    """Another writer changed the job since it was read; re-read it and decide again."""


class ProcessingRequestRefused(DeterministicError, ValueError):
    """The backend will not run this request as it stands (a bad setting): retrying cannot help."""


class InvalidProcessingRequest(ProcessingRequestRefused):
    """A request SageMaker would refuse, or run wrongly; the message names every bad field."""


class ProcessingJobExists(ShardflowError, RuntimeError):
    """A job of that name was submitted already; describe it instead of submitting again."""


class UnsafeKey(DeterministicError, ValueError):
    """An object key (or a file name) that is not a plain relative path under its prefix: it could
    name a file outside the folder it is meant for, so it is never turned into a path or a key."""


class ResourceError(DeterministicError):
    """An AWS resource that is missing or refuses access: the message names it and what to do.
    Retrying cannot create a bucket or grant a permission, so tasks fail at once."""


class ObjectNotFound(ResourceError, FileNotFoundError):
    """No object at that S3 address."""


class ObjectExists(ShardflowError, FileExistsError):
    """A create-only write found an object at its address already (S3's 412 to ``If-None-Match``)."""


class BucketNotFound(ResourceError):
    """No bucket of that name (or not in this account's reach)."""


class AccessDenied(ResourceError, PermissionError):
    """The credentials in use may not do this to that resource."""


class JobTableNotFound(ResourceError):
    """No DynamoDB job table of that name in the region in use."""
