"""``infra/shardflow.yaml`` created in a moto server, and jobs run against exactly what its outputs
name: the bucket and its prefixes, the job table and its indexes, the processing role and the image
repository. Nothing the stack names is typed twice: every name below comes from the outputs."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import uuid
from pathlib import Path

import boto3
import pytest
import yaml
from support.stack import TEMPLATE, Stack, create_stack, unique_parameters, update_stack

from shardflow.aws.jobstore import JobStore
from shardflow.aws.s3 import S3ObjectStore
from shardflow.cli import main
from shardflow.compute.sagemaker import SageMakerBackend
from shardflow.core.lifecycle import submit_job
from shardflow.core.prepare import prepare_job
from shardflow.core.record import JobStatus
from shardflow.core.s3uri import S3Uri
from shardflow.local.demo_data import demo_dataset, train_demo_model, upload_dataset
from shardflow.spec.jobs import job_for_run
from shardflow.spec.pipeline import load_spec

DATE = "2026-03-09"
ROWS = (700, 300, 500)


def test_stack_template_passes_cfn_lint():
    cfn_lint = Path(sys.executable).with_name("cfn-lint")
    result = subprocess.run([str(cfn_lint), str(TEMPLATE)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture
def stack(aws) -> Stack:
    return create_stack(f"shardflow-{uuid.uuid4().hex[:8]}", unique_parameters())


def seed(stack: Stack) -> bytes:
    """The demo model under the stack's model prefix, a day of inputs under its input prefix."""
    model = train_demo_model()
    uri = S3Uri.parse(stack["ModelUri"]).join("demo", "model.joblib")
    boto3.client("s3").put_object(Bucket=uri.bucket, Key=uri.key, Body=model)
    upload_dataset(boto3.client("s3"), stack["InputUri"] + f"dt={DATE}/", demo_dataset(ROWS))
    return model


def spec_from_outputs(folder: Path, stack: Stack, model: bytes, *, name: str = "stack", **compute) -> Path:
    spec = {
        "name": name,
        "schedule": "@daily",
        "start_date": "2026-01-01",
        "model": {"uri": stack["ModelUri"] + "demo/model.joblib", "sha256": hashlib.sha256(model).hexdigest()},
        "input": {"prefix": stack["InputUri"] + "dt={{ ds }}/", "format": "parquet"},
        "output": {"prefix": stack["OutputUri"] + f"{name}/dt={{{{ ds }}}}/", "format": "parquet"},
        "compute": {"backend": "local", "instance_type": "ml.m5.xlarge", "instance_count": 2} | compute,
        "retries": {"max_attempts": 2, "backoff_seconds": 0},
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def run_from_outputs(stack: Stack, spec: Path) -> JobStore:
    """``shardflow run`` with the stack's table; asserts the job succeeded where the outputs say."""
    assert main(["run", str(spec), "--date", DATE, "--table", stack["JobTableName"]]) == 0
    store = JobStore(boto3.client("dynamodb"), stack["JobTableName"])
    (record,) = store.list_jobs(pipeline=load_spec(spec).name)  # the by_pipeline index
    assert (record.status, record.rows) == (JobStatus.SUCCEEDED, sum(ROWS))
    assert record.job_id in [job.job_id for job in store.list_jobs(status=JobStatus.SUCCEEDED)]  # by_status
    assert record.job_id in [job.job_id for job in store.list_jobs()]  # by_created
    output = S3Uri.parse(record.output_prefix)
    assert str(output).startswith(stack["OutputUri"])
    listed = boto3.client("s3").list_objects_v2(Bucket=output.bucket, Prefix=output.key)["Contents"]
    keys = {item["Key"].removeprefix(output.key) for item in listed}
    assert {"_SUCCESS", "_manifest.json", *demo_dataset(ROWS)} <= keys
    return store


def test_stack_outputs_carry_a_job_end_to_end(stack, local_env, tmp_path):
    spec = spec_from_outputs(tmp_path, stack, seed(stack))

    run_from_outputs(stack, spec)

    # The table the stack made is the table the job store makes for itself: same keys, same indexes.
    dynamodb = boto3.client("dynamodb")
    own = JobStore(dynamodb, f"own-{uuid.uuid4().hex[:8]}")
    own.create_table()

    def shape(table: str) -> tuple:
        described = dynamodb.describe_table(TableName=table)["Table"]
        indexes = {i["IndexName"]: (i["KeySchema"], i["Projection"]) for i in described["GlobalSecondaryIndexes"]}
        return described["KeySchema"], indexes

    assert shape(stack["JobTableName"]) == shape(own.table)


def test_stack_role_and_repository_reach_the_processing_job_request(stack, tmp_path):
    model = seed(stack)
    sagemaker = {"image_uri": stack["ImageRepositoryUri"] + ":0.1.0", "role_arn": stack["ProcessingRoleArn"]}
    spec = load_spec(spec_from_outputs(tmp_path, stack, model, backend="sagemaker", sagemaker=sagemaker))
    store = JobStore(boto3.client("dynamodb"), stack["JobTableName"])
    record = prepare_job(job_for_run(spec, run_id="manual__stack", when=DATE), store, S3ObjectStore(boto3.client("s3")))

    record = submit_job(record.job_id, store, SageMakerBackend(region_name="us-east-1"))

    described = boto3.client("sagemaker").describe_processing_job(ProcessingJobName=record.current_processing_job)
    assert described["RoleArn"] == stack["ProcessingRoleArn"]
    assert described["AppSpecification"]["ImageUri"] == stack["ImageRepositoryUri"] + ":0.1.0"
    repository = stack["ImageRepositoryUri"].split("/", 1)[1]
    assert boto3.client("ecr").describe_repositories(repositoryNames=[repository])["repositories"]


def test_stack_update_of_the_output_prefix_moves_the_jobs(stack, local_env, tmp_path):
    model = seed(stack)
    run_from_outputs(stack, spec_from_outputs(tmp_path, stack, model, name="before"))

    updated = update_stack(stack, OutputPrefix="scores/")

    assert updated["OutputUri"] == f"s3://{stack['DataBucketName']}/scores/" != stack["OutputUri"]
    unchanged = ("DataBucketName", "JobTableName", "ProcessingRoleArn", "ImageRepositoryUri", "AirflowPolicyArn")
    assert {k: updated[k] for k in unchanged} == {k: stack[k] for k in unchanged}
    run_from_outputs(updated, spec_from_outputs(tmp_path, updated, model, name="after"))
    # moto re-applies a resource on a parameter change only when the resource names the parameter
    # with Ref (the policies use Fn::Sub), and cannot update a managed policy: the roles' new
    # documents are checked by test_least_privilege's rule on a stack created with the new value.
