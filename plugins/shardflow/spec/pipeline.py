"""Pipeline specs: the typed, validated form of a ``dags/pipelines/*.yaml`` file.

A mistake in a spec is caught here, at parse time, with the file and the field named.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import date
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator

from shardflow.core.job import ComputeSpec, JobInput, JobOutput, ModelSpec, RetrySpec, check_column_list
from shardflow.core.keys import check_relative
from shardflow.core.s3uri import check_s3_uri
from shardflow.core.sagemaker_settings import SageMakerSpec
from shardflow.core.strict import Strict
from shardflow.errors import SpecError
from shardflow.spec.quotas import quota_problem
from shardflow.spec.schedules import check_clock_schedule
from shardflow.spec.templating import PREFIX_VARIABLES, TemplateError, render_prefix, template_variables

__all__ = [
    "AssetSchedule",
    "ComputeSpec",
    "InputSpec",
    "InputWait",
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

_NAME = r"^[a-z][a-z0-9_-]{0,39}$"
_ASSET_URI = re.compile(r"^[a-z][a-z0-9+.-]*://\S+$")
#: Templates render against this date when a spec is checked; any date would do.
_SAMPLE_DATE = date(2026, 1, 31)
#: Variables that tell apart two runs on the same day.
_TIME_VARIABLES = {"ts", "ts_nodash", "logical_date"}


def _check_prefix(value: str) -> str:
    """An S3 prefix that may use the run variables of :data:`PREFIX_VARIABLES` in its key."""
    bucket = value[len("s3://") :].partition("/")[0] if value.startswith("s3://") else ""
    if "{" in bucket or "%" in bucket:
        raise ValueError("the bucket cannot be templated: only the key after s3://bucket/ may use {{ ds }} and co.")
    try:
        rendered = render_prefix(value, _SAMPLE_DATE)
    except TemplateError as error:
        raise ValueError(f"is not a valid template: {error}") from None
    check_s3_uri(rendered, prefix=True)
    return value


class InputWait(Strict):
    """Wait for a run's input before preparing its job: input that lands after the schedule fires.

    :param marker: an object under the prefix that the producer writes last, such as ``_SUCCESS``;
        without one, the first non-empty file of the input format is enough.
    :param timeout_seconds: how long to wait before the run fails, naming what never arrived.
    """

    marker: str | None = Field(
        None,
        description="a key under the input prefix written when the input is complete, e.g. _SUCCESS; "
        "null waits for one non-empty input file",
    )
    timeout_seconds: Annotated[int, Field(ge=1, le=7 * 86400)] = Field(
        21600, description="fail the run when the input has not arrived after this long (at most 7 days)"
    )

    @field_validator("marker")
    @classmethod
    def _marker(cls, value: str | None) -> str | None:
        if value is not None and ("{" in value or "%" in value):
            raise ValueError(f"marker {value!r} cannot be templated: the prefix carries the run's date")
        return value if value is None else check_relative(value, "marker")


class InputSpec(JobInput):
    """Where the rows come from. ``prefix`` may use the run's date, such as ``{{ ds }}``."""

    prefix: str = Field(description="s3://bucket/key/ ending in '/'; the key may use {{ ds }}, {{ ds_nodash }}, ...")
    wait: InputWait | None = Field(
        None, description="wait for the input to arrive before the job starts; null fails at once when it is missing"
    )

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        return _check_prefix(value)


class OutputSpec(JobOutput):
    """Where predictions go: one output object per input object, under the same relative key."""

    prefix: str = Field(description="s3://bucket/key/ ending in '/'; the key uses the run's date, e.g. dt={{ ds }}/")

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        return _check_prefix(value)


class AssetSchedule(Strict):
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


class PipelineSpec(Strict):
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
        check_column_list(tuple(value or ()), str(info.field_name), compute.backend if compute is not None else None)
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
