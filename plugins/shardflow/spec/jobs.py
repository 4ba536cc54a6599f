"""From what a user wrote to the one job description: :func:`job_for_run` turns a pipeline spec and
a run's dates into a :class:`~shardflow.core.job.JobSpec`; the trigger form's values become a
pipeline spec first (:func:`spec_from_form`), so both paths share every check."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime
from typing import Any

from shardflow.core.job import JobInput, JobOutput, JobSpec
from shardflow.errors import PrepareError, SpecError
from shardflow.spec.pipeline import PipelineSpec, parse_spec
from shardflow.spec.quotas import quota_problem
from shardflow.spec.settings import Settings
from shardflow.spec.templating import render_prefix

__all__ = ["ADHOC_PIPELINE", "FORM_FIELDS", "job_for_run", "spec_from_form"]

#: The pipeline name of every job the trigger form starts.
ADHOC_PIPELINE = "adhoc"
#: The trigger form's fields and where each goes in a pipeline spec.
FORM_FIELDS: dict[str, tuple[str, str]] = {
    "model_uri": ("model", "uri"),
    "model_training_job": ("model", "training_job"),
    "model_sha256": ("model", "sha256"),
    "input_prefix": ("input", "prefix"),
    "input_format": ("input", "format"),
    "output_prefix": ("output", "prefix"),
    "output_format": ("output", "format"),
    "overwrite": ("output", "overwrite"),
    "backend": ("compute", "backend"),
    "instance_type": ("compute", "instance_type"),
    "instance_count": ("compute", "instance_count"),
    "max_runtime_seconds": ("compute", "max_runtime_seconds"),
    "distribution": ("compute", "distribution"),
    "split_objects": ("compute", "split_objects"),
    "max_attempts": ("retries", "max_attempts"),
}


def job_for_run(
    spec: PipelineSpec,
    *,
    run_id: str,
    when: date | datetime | str,
    dag_id: str | None = None,
    output_prefix: str | None = None,
    overwrite: bool = False,
) -> JobSpec:
    """The job ``spec`` asks for in the run ``run_id`` at ``when`` (its logical date, or the time
    an Asset-triggered run was queued): the prefixes rendered, everything checked again.

    :param dag_id: the DAG that runs it (default: the spec's own).
    :param output_prefix: write here instead of the spec's output prefix (``shardflow run``).
    :param overwrite: replace another job's published outputs even if the spec does not say
        ``output.overwrite`` (``shardflow run --overwrite``).
    :raises SpecError: a rendered prefix is not a valid S3 prefix.
    """
    try:
        return JobSpec(
            pipeline=spec.name,
            dag_id=dag_id or spec.dag_id,
            run_id=run_id,
            model=spec.model,
            input=JobInput(prefix=render_prefix(spec.input.prefix, when), format=spec.input.format),
            output=JobOutput(
                prefix=output_prefix or render_prefix(spec.output.prefix, when),
                format=spec.output.format,
                probability=spec.output.probability,
                overwrite=spec.output.overwrite or overwrite,
            ),
            compute=spec.compute,
            features=tuple(spec.features) if spec.features else None,
            passthrough=tuple(spec.passthrough) if spec.passthrough is not None else None,
            retries=spec.retries,
            heartbeat_timeout_seconds=spec.heartbeat_timeout_seconds,
        )
    except ValueError as error:
        raise SpecError(f"pipeline {spec.name}: its job for run {run_id} at {when} is invalid:\n{error}") from None


def spec_from_form(params: Mapping[str, Any], settings: Settings) -> PipelineSpec:
    """The pipeline spec a trigger form describes, checked by the spec's own rules (the form's
    schema is enforced by Airflow too, but a run can be cleared after the settings change).

    With ``backend: sagemaker`` the deployment's SageMaker settings (:attr:`Settings.sagemaker`)
    fill ``compute.sagemaker``.

    :raises SpecError: naming each bad field.
    :raises PrepareError: the job would break its instance type's quota, so it could never start.
    """
    data: dict[str, Any] = {
        "name": ADHOC_PIPELINE,
        "start_date": datetime.now(UTC).date().isoformat(),
        "compute": {},
        "retries": {},
    }
    for field, (section, key) in FORM_FIELDS.items():
        if params.get(field) is not None:
            data.setdefault(section, {})[key] = params[field]
    if params.get("model_registry_group") is not None:
        registry = {
            "group": params["model_registry_group"],
            "status": params.get("model_registry_status") or "Approved",
        }
        data.setdefault("model", {})["registry"] = registry
    if data["compute"].get("backend") == "sagemaker" and settings.sagemaker is not None:
        data["compute"]["sagemaker"] = settings.sagemaker.model_dump(mode="json", exclude_defaults=True)
    spec = parse_spec(data, "the trigger form")
    problem = quota_problem(spec.compute.instance_type, spec.compute.instance_count, settings.instance_quotas)
    if problem:
        raise PrepareError(f"the trigger form: instance_count: {problem}")
    return spec
