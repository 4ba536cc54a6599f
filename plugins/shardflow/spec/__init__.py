"""Pipeline specs (``dags/pipelines/*.yaml``) and the trigger form: parsed, checked, and turned
into the one job description (:func:`shardflow.spec.jobs.job_for_run`)."""

from shardflow.spec.pipeline import (
    AssetSchedule,
    ComputeSpec,
    InputSpec,
    ModelSpec,
    OutputSpec,
    PipelineSpec,
    RetrySpec,
    SageMakerSpec,
    SpecError,
    check_s3_uri,
    check_specs,
    load_spec,
    load_specs,
    parse_spec,
    pipeline_json_schema,
)

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
