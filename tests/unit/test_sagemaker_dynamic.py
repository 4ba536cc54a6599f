"""The SageMaker request of a dynamic job's attempt: no data input (the instances claim units from
the job record and read them from S3 themselves), ``--claim-units`` on the script's command line,
and never more instances than units. Pure functions: nothing here talks to AWS."""

from __future__ import annotations

from dataclasses import replace

import pytest
from support.records import IMAGE, ROLE, sample_job_spec

from shardflow.compute.sagemaker_request import (
    InvalidProcessingRequest,
    build_create_request,
    container_arguments,
    validate_request,
)
from shardflow.core.ports import ProcessingRequest

BUCKET = "data-bucket"
KEYS = tuple(f"events/dt=2026-01-01/part-{i:04d}.parquet" for i in range(3))


def dynamic_request(units: int, instance_count: int = 4, **changes) -> ProcessingRequest:
    job = sample_job_spec(
        "churn-4b795638361b",
        BUCKET,
        backend="sagemaker",
        input_prefix=f"s3://{BUCKET}/events/dt=2026-01-01/",
        output_prefix=f"s3://{BUCKET}/scores/dt=2026-01-01/",
        model_uri=f"s3://{BUCKET}/models/churn/model.joblib",
        instance_type="ml.c5.2xlarge",
        instance_count=instance_count,
        distribution="dynamic",
        **changes,
    )
    return ProcessingRequest.for_attempt(
        job,
        job_id="churn-4b795638361b",
        job_table="shardflow-jobs",
        attempt=2,
        job_name="churn-4b795638361b-a2",
        input_keys=KEYS,
        units=units,
    )


def test_a_dynamic_request_has_only_the_model_input_and_claims_units():
    request = dynamic_request(units=7)
    assert request.dynamic and request.instance_count == 4  # more units than objects: 4 instances
    body = build_create_request(request, validate_request(request, "us-east-1"), "us-east-1")

    (model,) = body["ProcessingInputs"]
    assert model["InputName"] == "model"
    assert model["S3Input"]["S3Uri"] == request.job.model.uri
    assert model["S3Input"]["S3DataDistributionType"] == "FullyReplicated"
    assert "data" not in {i["InputName"] for i in body["ProcessingInputs"]}

    arguments = body["AppSpecification"]["ContainerArguments"]
    assert arguments.count("--claim-units") == 1
    assert arguments == container_arguments(request)
    assert body["AppSpecification"]["ImageUri"] == IMAGE and body["RoleArn"] == ROLE
    assert body["ProcessingResources"]["ClusterConfig"]["InstanceCount"] == request.instance_count == 4
    assert body["Environment"] == {
        "AWS_DEFAULT_REGION": "us-east-1",
        "SHARDFLOW_JOB_ID": "churn-4b795638361b",
        "SHARDFLOW_JOB_TABLE": "shardflow-jobs",
        "SHARDFLOW_ATTEMPT": "2",
    }
    # The outputs still go to the attempt's staging (the instance's manifest, at the job's end).
    (output,) = body["ProcessingOutputConfig"]["Outputs"]
    assert output["S3Output"]["S3Uri"] == f"s3://{BUCKET}/scores/dt=2026-01-01/_staging/churn-4b795638361b/attempt-2/"


def test_a_dynamic_request_gets_no_more_instances_than_units():
    request = dynamic_request(units=2)
    assert request.instance_count == 2
    body = build_create_request(request, validate_request(request, "us-east-1"), "us-east-1")
    assert body["ProcessingResources"]["ClusterConfig"]["InstanceCount"] == 2


def test_a_dynamic_request_with_split_objects_may_have_more_instances_than_objects():
    request = dynamic_request(units=12, instance_count=6, split_objects=True)
    assert request.instance_count == 6 > len(request.input_keys)
    body = build_create_request(request, validate_request(request), "us-east-1")
    assert body["ProcessingResources"]["ClusterConfig"]["InstanceCount"] == 6


def test_a_sharded_request_unlike_a_dynamic_one_keeps_its_data_input_and_no_claim_option():
    request = replace(dynamic_request(units=7), units=0, instance_count=3)
    body = build_create_request(request, validate_request(request, "us-east-1"), "us-east-1")
    assert [i["InputName"] for i in body["ProcessingInputs"]] == ["data", "model"]
    assert "--claim-units" not in body["AppSpecification"]["ContainerArguments"]


def test_a_dynamic_request_with_more_instances_than_units_is_refused_naming_the_count():
    request = replace(dynamic_request(units=3), instance_count=5)  # as a hand-edited record could hold
    with pytest.raises(InvalidProcessingRequest) as raised:
        validate_request(request, "us-east-1")
    (line,) = [line.strip() for line in str(raised.value).splitlines() if "compute.instance_count" in line]
    assert line.startswith("compute.instance_count: 5 instances for 3 work unit(s)")
    assert "paid for nothing" in line
    assert "churn-4b795638361b-a2" in str(raised.value)  # the processing job named


def test_a_dynamic_request_is_checked_against_units_not_objects():
    # 4 instances over 3 objects is refused when sharded, but 5 units keep 4 instances busy.
    dynamic = replace(dynamic_request(units=5), instance_count=4)
    validate_request(dynamic, "us-east-1")
    sharded = replace(dynamic, units=0)
    with pytest.raises(InvalidProcessingRequest, match=r"compute.instance_count: 4 instances for 3 input object"):
        validate_request(sharded, "us-east-1")
