"""The one typed description of a job: :class:`JobSpec`.

A pipeline spec (with a run's dates) and the trigger form both become a ``JobSpec`` through one
function (:func:`shardflow.spec.jobs.job_for_run`); the job record stores it, the compute backends
take it, and the processing script's command line is derived from it
(:mod:`shardflow.core.invocation`). Its parts are shared with the pipeline spec, so a setting is
checked by the same rule wherever it is written.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import ConfigDict, Field, ValidationInfo, field_validator, model_validator

from shardflow.contract import MAX_ARGUMENT_CHARS, MAX_INSTANCES, MAX_RUNTIME_SECONDS, InputFormat, OutputFormat
from shardflow.core.s3uri import check_s3_uri
from shardflow.core.sagemaker_settings import SageMakerSpec
from shardflow.core.strict import Strict

__all__ = [
    "INSTANCE_TYPE",
    "JOB_SPEC_VERSION",
    "READABLE_JOB_SPEC_VERSIONS",
    "ComputeSpec",
    "JobInput",
    "JobOutput",
    "JobSpec",
    "ModelSpec",
    "RegistryModel",
    "RetrySpec",
]

#: Bumped when a stored job description changes shape; a record of another version is refused.
JOB_SPEC_VERSION: Literal[2] = 2
#: The versions this code reads: 1 lacks compute.distribution, split_objects and lease_seconds
#: (read as sharded); code that reads only 1 refuses a version-2 record by name.
READABLE_JOB_SPEC_VERSIONS = (1, 2)
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
#: SageMaker's instance type form, ``ml.<family>.<size>``.
INSTANCE_TYPE = re.compile(r"^ml\.[a-z0-9]+\.[a-z0-9]+$")
#: SageMaker's names of training jobs and model package groups.
TRAINING_JOB_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
MODEL_PACKAGE_GROUP = TRAINING_JOB_NAME


class RegistryModel(Strict):
    """A model from the SageMaker Model Registry: the newest package of ``group`` whose approval
    status is ``status``. Its integrity hash is the package's ``CustomerMetadataProperties["sha256"]``.

    :param group: the model package group's name.
    :param status: the approval status a package must have.
    """

    group: Annotated[str, Field(pattern=MODEL_PACKAGE_GROUP.pattern)]
    status: Literal["Approved", "PendingManualApproval", "Rejected"] = "Approved"


class ModelSpec(Strict):
    """The model: exactly one of ``uri``, ``training_job`` and ``registry``. Only an artifact whose
    sha256 matches is ever loaded; ``prepare`` resolves a training job or a registry group once,
    and the job record keeps what it resolved to (:class:`~shardflow.core.artifact.ModelArtifact`).

    :param uri: ``s3://bucket/key`` of a joblib or pickle file, an XGBoost model (``.json``,
        ``.ubj``), or a training job's ``model.tar.gz``.
    :param training_job: a SageMaker training job (Completed) whose ``model.tar.gz`` is the model.
    :param registry: the Model Registry group and approval status to take the newest package of.
    :param sha256: the artifact's hex sha256 (``sha256sum model.joblib``); required with ``uri``
        and ``training_job``, taken from the package with ``registry``.
    """

    # Editors that read the JSON Schema offer the three forms; the validator below says which is wrong.
    model_config = ConfigDict(
        json_schema_extra={
            "oneOf": [
                {"required": ["uri", "sha256"]},
                {"required": ["training_job", "sha256"]},
                {"required": ["registry"], "not": {"required": ["sha256"]}},
            ]
        }
    )

    uri: str | None = Field(
        default=None, description="s3:// address of a joblib file, an XGBoost .json/.ubj, or a model.tar.gz"
    )
    training_job: Annotated[str | None, Field(pattern=TRAINING_JOB_NAME.pattern)] = Field(
        default=None, description="a Completed SageMaker training job: its model.tar.gz is the model"
    )
    registry: RegistryModel | None = Field(
        default=None, description="the newest package of a Model Registry group with an approval status"
    )
    sha256: str | None = Field(
        default=None, description="the artifact's sha256; required with uri and training_job, not with registry"
    )

    @field_validator("uri")
    @classmethod
    def _uri(cls, value: str | None) -> str | None:
        return None if value is None else check_s3_uri(value, prefix=False)

    @field_validator("sha256")
    @classmethod
    def _sha256(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip().lower()
        if not _SHA256.match(value):
            raise ValueError("must be 64 hexadecimal characters: the output of `sha256sum MODEL`")
        return value

    @property
    def label(self) -> str:
        """The model as the spec names it, for messages: its URI, its training job or its registry group."""
        if self.training_job is not None:
            return f"of training job {self.training_job}"
        if self.registry is not None:
            return f"of registry group {self.registry.group} ({self.registry.status})"
        return str(self.uri)

    @model_validator(mode="after")
    def _one_source(self) -> ModelSpec:
        given = [name for name in ("uri", "training_job", "registry") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of model.uri (an S3 object), model.training_job (a SageMaker training "
                f"job's model.tar.gz) and model.registry (a Model Registry group); got {', '.join(given) or 'none'}"
            )
        if self.registry is not None and self.sha256 is not None:
            raise ValueError(
                "model.sha256 does not go with model.registry: the package's CustomerMetadataProperties "
                "sha256 is the hash checked; leave model.sha256 out"
            )
        if self.uri is not None and self.sha256 is None:
            raise ValueError("model.sha256 is required with model.uri: the output of `sha256sum MODEL`")
        if self.training_job is not None and self.sha256 is None:
            raise ValueError(
                "model.sha256 is required with model.training_job: the sha256 of its model.tar.gz "
                f"(`aws sagemaker describe-training-job --training-job-name {self.training_job} "
                "--query ModelArtifacts.S3ModelArtifacts` gives its URI; `aws s3 cp URI - | sha256sum` its hash)"
            )
        return self


class ComputeSpec(Strict):
    """Where the processing job runs.

    :param backend: ``local`` (processes on this machine) or ``sagemaker``.
    :param instance_type: a SageMaker instance type such as ``ml.m5.xlarge``.
    :param instance_count: instances; each gets its ShardedByS3Key share of the input objects.
    :param max_runtime_seconds: each attempt is stopped after this long (SageMaker allows 9 days).
    :param distribution: how the input objects reach the instances: ``sharded`` (each instance gets
        its ShardedByS3Key share, about 1/N of the objects by count), ``dynamic`` (instances claim
        work units from the job record, biggest first, until none is left), or ``auto`` (dynamic
        when the sharded shares' predicted imbalance passes a threshold; see docs/distribution.md).
    :param split_objects: with dynamic distribution, a Parquet object of several row groups may be
        cut into ranges of row groups, each its own unit (its outputs are ``<name>.part-NNNNN``).
    :param lease_seconds: dynamic distribution: how long a claimed unit stays its instance's without
        a renewal; an instance that dies costs this much before another takes its unit.
    :param sagemaker: the ``sagemaker`` backend's settings; required with that backend, ignored by
        ``local``.
    """

    backend: Literal["local", "sagemaker"] = "local"
    instance_type: Annotated[str, Field(pattern=INSTANCE_TYPE.pattern)] = "ml.m5.xlarge"
    instance_count: Annotated[int, Field(ge=1, le=MAX_INSTANCES)] = 1
    max_runtime_seconds: Annotated[int, Field(ge=60, le=MAX_RUNTIME_SECONDS)] = 3600
    distribution: Literal["sharded", "dynamic", "auto"] = "sharded"
    split_objects: bool = False
    lease_seconds: Annotated[int, Field(ge=5, le=3600)] = 60
    sagemaker: Annotated[SageMakerSpec | None, Field(validate_default=True)] = None

    @field_validator("sagemaker")
    @classmethod
    def _sagemaker(cls, value: SageMakerSpec | None, info: ValidationInfo) -> SageMakerSpec | None:
        if value is None and info.data.get("backend") == "sagemaker":
            raise ValueError(
                "required when backend is sagemaker: give at least image_uri and role_arn "
                "(see docs/sagemaker.md), or set SHARDFLOW_SAGEMAKER_IMAGE_URI and SHARDFLOW_SAGEMAKER_ROLE_ARN"
            )
        return value

    @model_validator(mode="after")
    def _split_needs_dynamic(self) -> ComputeSpec:
        if self.split_objects and self.distribution == "sharded":
            raise ValueError("split_objects needs distribution dynamic or auto: ShardedByS3Key hands out whole objects")
        return self

    def instances_for(self, objects: int) -> int:
        """The instances an attempt over ``objects`` input objects gets: never more instances than
        objects, since an idle instance is billed like a busy one."""
        return max(1, min(self.instance_count, objects))


class RetrySpec(Strict):
    """How often failed files are resubmitted, and how long to wait between attempts."""

    max_attempts: Annotated[int, Field(ge=1, le=10)] = 3
    backoff_seconds: Annotated[int, Field(ge=0, le=3600)] = 30


class JobInput(Strict):
    """Where a job's rows come from: every object of the format under ``prefix``."""

    prefix: str
    format: InputFormat = "parquet"

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        return check_s3_uri(value, prefix=True)


class JobOutput(Strict):
    """Where predictions go: one output object per input object, under the same relative key."""

    prefix: str
    format: OutputFormat = "parquet"
    probability: Literal["one", "per_class"] = Field(
        default="one",
        description="classifiers: 'one' probability column (the positive class, or the predicted one), "
        "or 'per_class': a probability_<class> column for every class",
    )
    overwrite: bool = Field(
        default=False,
        description="replace the published outputs of another job under the prefix; without it such a run "
        "is refused (docs/outputs.md)",
    )

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        return check_s3_uri(value, prefix=True)


def check_column_list(value: tuple[str, ...] | None, field: str, backend: str | None) -> None:
    """A column list travels to the script as one comma-separated argument: no name may hold a
    comma or be empty, and SageMaker passes an argument only up to 256 characters."""
    unusable = [name for name in value or () if "," in name or not name]
    if unusable:
        raise ValueError(
            f"column name(s) {', '.join(map(repr, unusable))} cannot be passed to the processing script, "
            "which takes the list comma-separated: rename the column(s) in the input data"
        )
    joined = len(",".join(value or ()))
    if backend == "sagemaker" and joined > MAX_ARGUMENT_CHARS:
        raise ValueError(
            f"the column names add up to {joined} characters, and SageMaker passes each container "
            f"argument only up to {MAX_ARGUMENT_CHARS}: leave {field} out "
            "(features default to the model's feature_names_in_, passthrough to every input column)"
        )


class JobSpec(Strict):
    """One job, as it runs: every template rendered, every setting checked.

    :param version: the shape of this description (:data:`JOB_SPEC_VERSION`).
    :param pipeline: the pipeline's name (``adhoc`` for the trigger form).
    :param dag_id: the Airflow DAG that owns the job.
    :param run_id: the DAG run; one run is one job.
    :param features: the model's input columns, when the model does not record them.
    :param passthrough: the input columns copied to the output (default: all of them).
    :param heartbeat_timeout_seconds: a running attempt silent this long is stopped (a pipeline
        spec asks for 30 s at least; tests of a lost heartbeat use less).
    """

    version: Literal[1, 2] = JOB_SPEC_VERSION
    pipeline: str
    dag_id: str
    run_id: str
    model: ModelSpec
    input: JobInput
    output: JobOutput
    compute: ComputeSpec = ComputeSpec()
    features: tuple[str, ...] | None = None
    passthrough: tuple[str, ...] | None = None
    retries: RetrySpec = RetrySpec()
    heartbeat_timeout_seconds: Annotated[int, Field(ge=1, le=86400)] = 600

    @field_validator("features", "passthrough")
    @classmethod
    def _fits_a_container_argument(cls, value: tuple[str, ...] | None, info: ValidationInfo) -> tuple[str, ...] | None:
        compute = info.data.get("compute")
        check_column_list(value, str(info.field_name), compute.backend if compute is not None else None)
        return value

    @model_validator(mode="after")
    def _split_parquet_only(self) -> JobSpec:
        if self.compute.split_objects and self.input.format != "parquet":
            raise ValueError(
                f"compute.split_objects cuts Parquet objects at their row groups; input.format is "
                f"{self.input.format}: set split_objects to false (whole objects are still claimed dynamically)"
            )
        return self

    @model_validator(mode="after")
    def _prefixes_apart(self) -> JobSpec:
        """A job that writes into its own input prefix would read its outputs on the next run."""
        output, source = self.output.prefix, self.input.prefix
        if output.startswith(source) or source.startswith(output):
            how = "is" if output == source else "lies inside" if output.startswith(source) else "contains"
            raise ValueError(
                f"output.prefix {output} {how} input.prefix {source}: a run would read its own outputs; "
                "write the outputs under a prefix apart from the inputs"
            )
        return self
