"""Pipeline specs: the typed, validated form of a ``dags/pipelines/*.yaml`` file.

A mistake in a spec is caught here, at parse time, with the file and the field named.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from shardflow.pools import quota_problem
from shardflow.schedules import check_clock_schedule
from shardflow.templating import PREFIX_VARIABLES, render_prefix, template_variables

__all__ = [
    "AssetSchedule",
    "ComputeSpec",
    "InputSpec",
    "ModelSpec",
    "OutputSpec",
    "PipelineSpec",
    "RetrySpec",
    "SageMakerSpec",
    "SpecError",
    "check_s3_uri",
    "check_specs",
    "load_spec",
    "load_specs",
    "parse_spec",
    "pipeline_json_schema",
]

InputFormat = Literal["parquet", "csv", "csv.gz", "jsonl", "jsonl.gz"]
OutputFormat = Literal["parquet", "csv"]

_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
#: SageMaker's instance type form, ``ml.<family>.<size>``.
INSTANCE_TYPE = re.compile(r"^ml\.[a-z0-9]+\.[a-z0-9]+$")
#: SageMaker passes each container argument and environment value only up to this length.
SAGEMAKER_MAX_ARGUMENT = 256
_ECR_IMAGE = re.compile(
    r"^(?P<account>\d{12})\.dkr\.ecr(?:-fips)?\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(?:\.cn)?"
    r"/[a-z0-9]+(?:[._/-][a-z0-9]+)*(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}|@sha256:[0-9a-f]{64})$"
)
_ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[A-Za-z0-9_+=,.@/-]{1,512}$")
_KMS_KEY = re.compile(
    r"^(?:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|alias/[A-Za-z0-9/_-]{1,250}"
    r"|arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:(?:key/[0-9a-f-]{36}|alias/[A-Za-z0-9/_-]{1,250}))$"
)
_SUBNET = re.compile(r"^subnet-[0-9a-f]{8}(?:[0-9a-f]{9})?$")
_SECURITY_GROUP = re.compile(r"^sg-[0-9a-f]{8}(?:[0-9a-f]{9})?$")
_TAG_KEY = re.compile(r"^[\w\s.:/=+@-]{1,128}$")
_TAG_VALUE = re.compile(r"^[\w\s.:/=+@-]{0,256}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,255}$")
#: Set by Shardflow for the processing script: a spec may not override them.
RESERVED_ENVIRONMENT = frozenset(
    {"SHARDFLOW_JOB_ID", "SHARDFLOW_JOB_TABLE", "SHARDFLOW_PROCESSING_JOB", "SHARDFLOW_CONFIG_DIR"}
)
_NAME = r"^[a-z][a-z0-9_-]{0,39}$"
_ASSET_URI = re.compile(r"^[a-z][a-z0-9+.-]*://\S+$")
#: Templates render against this date when a spec is checked; any date would do.
_SAMPLE_DATE = date(2026, 1, 31)
#: Variables that tell apart two runs on the same day.
_TIME_VARIABLES = {"ts", "ts_nodash", "logical_date"}


class SpecError(ValueError):
    """A spec that cannot be used; the message names the file and every bad field."""


def check_s3_uri(value: str, *, prefix: bool) -> str:
    """Return ``value`` if it is an ``s3://`` prefix (``prefix=True``) or object URI; else raise
    ``ValueError`` saying what to write instead."""
    if not value.startswith("s3://"):
        raise ValueError("must start with s3:// (for example s3://my-bucket/path/)")
    if len(value) > 1024:
        raise ValueError(f"is {len(value)} characters long; S3 and SageMaker accept at most 1024")
    bucket, _, key = value[len("s3://") :].partition("/")
    if not _BUCKET.match(bucket):
        raise ValueError(
            f"bucket {bucket!r} is not a valid S3 bucket name "
            "(3-63 characters: lower-case letters, digits, dots and hyphens)"
        )
    if prefix and key and not key.endswith("/"):
        raise ValueError("a prefix must end with '/' so that it never matches a sibling folder")
    if not prefix and (not key or key.endswith("/")):
        raise ValueError("must name an object, not a folder")
    return value


def _check_prefix(value: str) -> str:
    """An S3 prefix that may use the run variables of :data:`PREFIX_VARIABLES` in its key."""
    bucket = value[len("s3://") :].partition("/")[0] if value.startswith("s3://") else ""
    if "{" in bucket or "%" in bucket:
        raise ValueError("the bucket cannot be templated: only the key after s3://bucket/ may use {{ ds }} and co.")
    unknown = sorted(template_variables(value) - PREFIX_VARIABLES.keys())
    if unknown:
        raise ValueError(
            f"unknown template variable(s) {', '.join(unknown)}: a prefix may use {', '.join(PREFIX_VARIABLES)}"
        )
    try:
        rendered = render_prefix(value, _SAMPLE_DATE)
    except Exception as error:  # any Jinja failure: the template cannot render for a real run either
        raise ValueError(f"does not render for a run on {_SAMPLE_DATE}: {error}") from None
    check_s3_uri(rendered, prefix=True)
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSpec(_Strict):
    """The model artifact. Only an artifact whose sha256 matches is ever unpickled.

    :param uri: ``s3://bucket/key`` of a joblib file.
    :param sha256: the artifact's hex sha256 (``sha256sum model.joblib``).
    """

    uri: str
    sha256: str

    @field_validator("uri")
    @classmethod
    def _uri(cls, value: str) -> str:
        return check_s3_uri(value, prefix=False)

    @field_validator("sha256")
    @classmethod
    def _sha256(cls, value: str) -> str:
        value = value.strip().lower()
        if not _SHA256.match(value):
            raise ValueError("must be 64 hexadecimal characters: the output of `sha256sum MODEL`")
        return value


class InputSpec(_Strict):
    """Where the rows come from. ``prefix`` may use the run's date, such as ``{{ ds }}``."""

    prefix: str = Field(description="s3://bucket/key/ ending in '/'; the key may use {{ ds }}, {{ ds_nodash }}, ...")
    format: InputFormat = "parquet"

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        return _check_prefix(value)


class OutputSpec(_Strict):
    """Where predictions go: one output object per input object, under the same relative key."""

    prefix: str = Field(description="s3://bucket/key/ ending in '/'; the key uses the run's date, e.g. dt={{ ds }}/")
    format: OutputFormat = "parquet"
    probability: Literal["one", "per_class"] = Field(
        default="one",
        description="classifiers: 'one' probability column (the positive class, or the predicted one), "
        "or 'per_class': a probability_<class> column for every class",
    )

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        return _check_prefix(value)


def _ids_like(values: list[str], pattern: re.Pattern[str], example: str) -> list[str]:
    bad = [v for v in values if not pattern.fullmatch(v)]
    if bad:
        raise ValueError(f"{', '.join(map(repr, bad))}: {example}")
    return values


class SageMakerSpec(_Strict):
    """How the ``sagemaker`` backend runs the job (the spec's ``compute.sagemaker`` block).

    :param image_uri: the processing image in ECR (``containers/Dockerfile``), with a tag or digest.
    :param role_arn: the execution role the job runs as (the stack's ``ProcessingRoleArn``).
    :param volume_size_gb: the storage volume of each instance; it holds the instance's inputs
        and outputs, so size it for its shard.
    :param volume_kms_key_id: a KMS key (id, alias or ARN) that encrypts the storage volumes.
    :param subnets: VPC subnets to run in; given together with ``security_group_ids``.
    :param security_group_ids: VPC security groups; given together with ``subnets``.
    :param network_isolation: must stay ``false``: the script reports to the DynamoDB job table.
    :param tags: tags on the processing job.
    :param environment: extra environment variables for the processing script.
    """

    image_uri: str
    role_arn: str
    volume_size_gb: Annotated[int, Field(ge=1, le=16384)] = 30
    volume_kms_key_id: str | None = None
    subnets: Annotated[list[str], Field(max_length=16)] = []
    security_group_ids: Annotated[list[str], Field(max_length=5)] = []
    network_isolation: bool = False
    tags: Annotated[dict[str, str], Field(max_length=50)] = {}
    environment: Annotated[dict[str, str], Field(max_length=90)] = {}

    @field_validator("image_uri")
    @classmethod
    def _image_uri(cls, value: str) -> str:
        if len(value) > 255 or not _ECR_IMAGE.fullmatch(value):
            raise ValueError(
                "must be an ECR image with a tag or digest, such as "
                "123456789012.dkr.ecr.us-east-1.amazonaws.com/shardflow-processing:1.0 "
                "(build and push containers/Dockerfile: see containers/README.md)"
            )
        return value

    @field_validator("role_arn")
    @classmethod
    def _role_arn(cls, value: str) -> str:
        if not _ROLE_ARN.fullmatch(value):
            raise ValueError(
                "must be an IAM role ARN such as arn:aws:iam::123456789012:role/shardflow-dev-processing "
                "(the stack's ProcessingRoleArn output)"
            )
        return value

    @field_validator("volume_kms_key_id")
    @classmethod
    def _kms_key(cls, value: str | None) -> str | None:
        if value is not None and not _KMS_KEY.fullmatch(value):
            raise ValueError("must be a KMS key id, key ARN, alias/<name> or alias ARN")
        return value

    @field_validator("subnets")
    @classmethod
    def _subnets(cls, value: list[str]) -> list[str]:
        return _ids_like(value, _SUBNET, "a subnet id looks like subnet-0123456789abcdef0")

    @field_validator("security_group_ids")
    @classmethod
    def _security_groups(cls, value: list[str]) -> list[str]:
        return _ids_like(value, _SECURITY_GROUP, "a security group id looks like sg-0123456789abcdef0")

    @field_validator("network_isolation")
    @classmethod
    def _network_isolation(cls, value: bool) -> bool:
        if value:
            raise ValueError(
                "must be false: an isolated container cannot report its files to the DynamoDB job table, "
                "so every job would fail; to keep traffic private, give subnets with S3 and DynamoDB "
                "VPC endpoints instead"
            )
        return value

    @field_validator("tags")
    @classmethod
    def _tags(cls, value: dict[str, str]) -> dict[str, str]:
        for key, text in value.items():
            if not _TAG_KEY.fullmatch(key) or key.lower().startswith("aws:"):
                raise ValueError(f"tag key {key!r}: 1-128 letters, digits, spaces or _.:/=+@-, not starting with aws:")
            if not _TAG_VALUE.fullmatch(text):
                raise ValueError(f"tag {key!r}: the value may hold up to 256 letters, digits, spaces or _.:/=+@-")
        return value

    @field_validator("environment")
    @classmethod
    def _environment(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            if not _ENV_NAME.fullmatch(name):
                raise ValueError(f"{name!r} is not a variable name (letters, digits and _, not starting with a digit)")
            if name in RESERVED_ENVIRONMENT:
                raise ValueError(f"{name} is set by Shardflow for each job: remove it")
            if len(text) > SAGEMAKER_MAX_ARGUMENT:
                raise ValueError(f"{name}: the value is {len(text)} characters; SageMaker passes at most 256")
        return value

    @model_validator(mode="after")
    def _vpc(self) -> SageMakerSpec:
        if bool(self.subnets) != bool(self.security_group_ids):
            raise ValueError("subnets and security_group_ids go together: give both to run in a VPC, or neither")
        return self

    def image_region(self) -> str:
        """The AWS region of the image's registry; SageMaker pulls images only from its own region."""
        match = _ECR_IMAGE.fullmatch(self.image_uri)
        assert match is not None  # checked when the spec was parsed
        return match["region"]


class ComputeSpec(_Strict):
    """Where the processing job runs.

    :param backend: ``local`` (processes on this machine) or ``sagemaker``.
    :param instance_type: a SageMaker instance type such as ``ml.m5.xlarge``.
    :param instance_count: instances; each gets its ShardedByS3Key share of the input objects.
    :param max_runtime_seconds: the job is stopped after this long.
    :param sagemaker: the ``sagemaker`` backend's settings; required with that backend, ignored by
        ``local``.
    """

    backend: Literal["local", "sagemaker"] = "local"
    instance_type: Annotated[str, Field(pattern=INSTANCE_TYPE.pattern)] = "ml.m5.xlarge"
    instance_count: Annotated[int, Field(ge=1, le=100)] = 1
    max_runtime_seconds: Annotated[int, Field(ge=60, le=432000)] = 3600
    sagemaker: Annotated[SageMakerSpec | None, Field(validate_default=True)] = None

    @field_validator("sagemaker")
    @classmethod
    def _sagemaker(cls, value: SageMakerSpec | None, info: ValidationInfo) -> SageMakerSpec | None:
        if value is None and info.data.get("backend") == "sagemaker":
            raise ValueError(
                "required when backend is sagemaker: give at least image_uri and role_arn "
                "(see the README's section on the SageMaker backend)"
            )
        return value


class RetrySpec(_Strict):
    """How often failed files are resubmitted, and how long to wait between attempts."""

    max_attempts: Annotated[int, Field(ge=1, le=10)] = 3
    backoff_seconds: Annotated[int, Field(ge=0, le=3600)] = 30


class AssetSchedule(_Strict):
    """Run when an Airflow Asset is updated instead of on a clock; give exactly one of the two.

    :param asset: the URI of an Asset that something else updates, e.g. ``s3://bucket/events/``.
    :param pipeline: another pipeline's name: run each time it publishes its predictions.
    """

    asset: str | None = Field(None, description="URI of an Airflow Asset, e.g. s3://bucket/events/")
    pipeline: Annotated[str, Field(pattern=_NAME)] | None = Field(
        None, description="another pipeline: run when its predictions are published"
    )

    @field_validator("asset")
    @classmethod
    def _asset(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if not _ASSET_URI.match(value) or value.startswith("airflow://"):
            raise ValueError("must be an Asset URI such as s3://bucket/prefix/ (any scheme but airflow://)")
        if value.startswith("s3://"):
            check_s3_uri(value, prefix=True)
        return value

    @model_validator(mode="after")
    def _exactly_one(self) -> AssetSchedule:
        if (self.asset is None) == (self.pipeline is None):
            raise ValueError("give exactly one of `asset` (an Asset URI) or `pipeline` (a pipeline's name)")
        return self


def _runs_at_most_daily(schedule: str | AssetSchedule | None) -> bool:
    if schedule is None or isinstance(schedule, AssetSchedule):
        return schedule is None
    if schedule.startswith("@"):
        return schedule != "@hourly"
    minute, hour = schedule.split()[:2]
    return minute.isdigit() and hour.isdigit()


class PipelineSpec(_Strict):
    """One recurring batch-inference pipeline; the DAG factory builds one DAG from it."""

    name: Annotated[str, Field(pattern=_NAME, description="the file's name without .yaml; the DAG is shardflow_<name>")]
    description: str = ""
    owner: str = "shardflow"
    schedule: str | AssetSchedule | None = Field(
        None,
        description="a preset (@daily, ...), a cron expression ('0 3 * * *'), an Asset to wait for "
        "({asset: URI} or {pipeline: NAME}), or null for manual runs only",
    )
    start_date: date
    catchup: bool = False
    model: ModelSpec
    input: InputSpec
    output: OutputSpec
    # Before features and passthrough: their check depends on the backend.
    compute: ComputeSpec = ComputeSpec()
    features: list[str] | None = None
    passthrough: list[str] | None = None
    retries: RetrySpec = RetrySpec()
    heartbeat_timeout_seconds: Annotated[int, Field(ge=30, le=86400)] = 600
    tags: list[str] = []

    @field_validator("features", "passthrough")
    @classmethod
    def _fits_a_container_argument(cls, value: list[str] | None, info: ValidationInfo) -> list[str] | None:
        compute = info.data.get("compute")
        joined = len(",".join(value or ()))
        if compute is not None and compute.backend == "sagemaker" and joined > SAGEMAKER_MAX_ARGUMENT:
            raise ValueError(
                f"the column names add up to {joined} characters, and SageMaker passes each container "
                f"argument only up to {SAGEMAKER_MAX_ARGUMENT}: leave {info.field_name} out "
                "(features default to the model's feature_names_in_, passthrough to every input column)"
            )
        return value

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, value: str | AssetSchedule | None, info: ValidationInfo) -> str | AssetSchedule | None:
        if isinstance(value, AssetSchedule) and value.pipeline is not None and value.pipeline == info.data.get("name"):
            raise ValueError("a pipeline cannot wait for its own predictions: name another pipeline")
        return check_clock_schedule(value) if isinstance(value, str) else value

    @field_validator("output")
    @classmethod
    def _output_per_run(cls, value: OutputSpec, info: ValidationInfo) -> OutputSpec:
        """Two runs must never share an output folder: a rerun would overwrite, a publish would fail."""
        schedule = info.data.get("schedule")
        if schedule is None or schedule == "@once":
            return value
        used = template_variables(value.prefix)
        if _runs_at_most_daily(schedule):
            if not used & PREFIX_VARIABLES.keys():
                raise ValueError(
                    f"prefix {value.prefix} is the same for every run: add the run's date, e.g. dt={{{{ ds }}}}/"
                )
        elif not used & _TIME_VARIABLES:
            why = (
                "an Asset can trigger several runs a day"
                if isinstance(schedule, AssetSchedule)
                else "the schedule runs more than once a day"
            )
            raise ValueError(
                f"prefix {value.prefix} names one folder a day but {why}: "
                "add the run's time, e.g. ts={{ ts_nodash }}/"
            )
        return value

    @property
    def dag_id(self) -> str:
        return f"shardflow_{self.name}"


def _union_branch_mismatch(item: Any) -> bool:
    """A schedule is a string or a mapping: drop the complaints of the branch the input is not."""
    loc = item["loc"]
    if len(loc) < 2 or loc[0] != "schedule":
        return False
    return (loc[1] == "str" and isinstance(item["input"], dict)) or (
        loc[1] == "AssetSchedule" and item["type"] == "model_type"
    )


def _describe(error: ValidationError, source: str) -> str:
    lines = []
    for item in error.errors():
        if _union_branch_mismatch(item):
            continue
        loc = [p for p in item["loc"] if p not in ("str", "AssetSchedule") and not str(p).startswith("function-")]
        field = ".".join(str(part) for part in loc) or "(top level)"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown field: remove it or check its spelling"
        elif item["type"] == "missing":
            message = "required field is missing"
        lines.append(f"  {field}: {message}")
    return f"{source}: invalid pipeline spec\n" + "\n".join(lines)


def parse_spec(data: object, source: str = "<spec>") -> PipelineSpec:
    """Validate already-loaded YAML/JSON data; ``source`` names it in errors."""
    if not isinstance(data, dict):
        raise SpecError(f"{source}: a pipeline spec must be a mapping of fields, got {type(data).__name__}")
    try:
        return PipelineSpec.model_validate(data)
    except ValidationError as error:
        raise SpecError(_describe(error, source)) from None


def load_spec(path: str | Path) -> PipelineSpec:
    """Read and validate one spec file."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise SpecError(f"{path}: not valid YAML: {error}") from None
    spec = parse_spec(data, str(path))
    if path.stem != spec.name:
        raise SpecError(f"{path}: name: {spec.name!r} must match the file name {path.stem!r}")
    return spec


def load_specs(folder: str | Path) -> dict[Path, PipelineSpec | SpecError]:
    """Every ``*.yaml`` spec in ``folder``: the spec, or the error that stops it.

    One bad file never hides the others.
    """
    results: dict[Path, PipelineSpec | SpecError] = {}
    for path in sorted(Path(folder).glob("*.yaml")):
        try:
            results[path] = load_spec(path)
        except SpecError as error:
            results[path] = error
    return results


def check_specs(folder: str | Path, quotas: Mapping[str, int] | None = None) -> dict[Path, PipelineSpec | SpecError]:
    """:func:`load_specs`, plus the checks that need the other specs or the deployment: a
    ``schedule.pipeline`` must name a pipeline in ``folder``, and with ``quotas`` declared a job
    must fit its instance type's quota (else its tasks would wait forever)."""
    results = load_specs(folder)
    names = {r.name for r in results.values() if isinstance(r, PipelineSpec)}
    for path, spec in results.items():
        if isinstance(spec, SpecError):
            continue
        problems = []
        upstream = spec.schedule.pipeline if isinstance(spec.schedule, AssetSchedule) else None
        if upstream is not None and upstream not in names:
            problems.append(
                f"  schedule.pipeline: no valid pipeline {upstream!r} in {Path(folder)}: "
                "its predictions would never arrive"
            )
        problem = quota_problem(spec.compute.instance_type, spec.compute.instance_count, quotas or {})
        if problem:
            field = "instance_count" if spec.compute.instance_type in (quotas or {}) else "instance_type"
            problems.append(f"  compute.{field}: {problem}")
        if problems:
            results[path] = SpecError(f"{path}: invalid pipeline spec\n" + "\n".join(problems))
    return results


def pipeline_json_schema() -> dict[str, Any]:
    """The JSON Schema of a spec file, for editors; committed as ``dags/pipelines/pipeline.schema.json``."""
    schema = PipelineSpec.model_json_schema()
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Shardflow pipeline spec",
        **{k: v for k, v in schema.items() if k != "title"},
    }
