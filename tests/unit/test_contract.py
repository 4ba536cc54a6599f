"""One home for the contract: the spec, the trigger form, the script's options and the SageMaker
request all take their formats, limits and reserved names from shardflow.contract."""

import typing

import pytest
from pydantic import ValidationError

from shardflow import contract
from shardflow.airflow.adhoc import adhoc_params
from shardflow.core.invocation import ScriptOptions
from shardflow.core.job import ComputeSpec, JobInput, JobOutput
from shardflow.core.sagemaker_settings import SageMakerSpec
from shardflow.spec.settings import Settings

IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/shardflow-processing:0.1.0"
ROLE = "arn:aws:iam::123456789012:role/shardflow-dev-processing"


def choices(flag: str) -> tuple[str, ...]:
    (action,) = [a for a in ScriptOptions.parser()._actions if flag in a.option_strings]
    return tuple(action.choices)


def test_every_side_offers_the_same_formats():
    assert set(contract.INPUT_SUFFIXES) == set(contract.INPUT_FORMATS) == set(choices("--input-format"))
    assert set(contract.OUTPUT_SUFFIXES) == set(contract.OUTPUT_FORMATS) == set(choices("--output-format"))
    assert typing.get_args(JobInput.model_fields["format"].annotation) == contract.INPUT_FORMATS
    assert typing.get_args(JobOutput.model_fields["format"].annotation) == contract.OUTPUT_FORMATS
    form = adhoc_params(Settings())
    assert tuple(form["input_format"].schema["enum"]) == contract.INPUT_FORMATS
    assert tuple(form["output_format"].schema["enum"]) == contract.OUTPUT_FORMATS


def test_the_spec_and_the_form_allow_what_sagemaker_allows():
    form = adhoc_params(Settings())
    assert form["max_runtime_seconds"].schema["maximum"] == contract.MAX_RUNTIME_SECONDS
    ComputeSpec(max_runtime_seconds=contract.MAX_RUNTIME_SECONDS)
    with pytest.raises(ValidationError, match="max_runtime_seconds"):
        ComputeSpec(max_runtime_seconds=contract.MAX_RUNTIME_SECONDS + 1)
    with pytest.raises(ValidationError, match="instance_count"):
        ComputeSpec(instance_count=contract.MAX_INSTANCES + 1)


@pytest.mark.parametrize("name", sorted(contract.RESERVED_ENVIRONMENT))
def test_a_spec_cannot_override_what_shardflow_sets_for_each_attempt(name):
    with pytest.raises(ValidationError, match=f"{name} is set by Shardflow for each job"):
        SageMakerSpec(image_uri=IMAGE, role_arn=ROLE, environment={name: "x"})


def test_the_variables_the_script_reads_are_the_reserved_ones():
    assert {contract.ENV_JOB_ID, contract.ENV_JOB_TABLE, contract.ENV_ATTEMPT} <= contract.RESERVED_ENVIRONMENT
