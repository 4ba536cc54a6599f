"""Least privilege, enforced: the stack's processing role and the principal holding its Airflow
policy, each acting through Shardflow's own code on a moto server with IAM-based access control on.

moto judges S3 requests against their bucket and key, so every S3 "cannot" below is an
AccessDenied from the server. It judges a DynamoDB or SageMaker request against the resource
``*`` (no statement scoped to a table or a processing job matches it: it refuses those calls
whatever the policy), and never checks ``iam:PassRole``, KMS or EC2 conditions. Those cases are
decided by ``support.iam_policy`` over the very documents the stack deployed, read back from IAM;
the first test holds that rule to moto's own verdicts wherever moto can judge.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
from boto3.exceptions import S3UploadFailedError
from support.iam_policy import Decision, evaluate
from support.stack import (
    Stack,
    airflow_role,
    assume,
    create_stack,
    enforce_iam,
    role_policies,
    session,
    unique_parameters,
)

from shardflow.aws.s3 import S3ObjectStore
from shardflow.compute.local_runner import download_inputs, upload_outputs
from shardflow.core.s3uri import S3Uri
from shardflow.errors import AccessDenied
from shardflow.local.demo_data import demo_dataset, train_demo_model, upload_dataset
from shardflow.local.moto import aws_environment, moto_server

REPO = Path(__file__).resolve().parents[2]
SUBNETS = "subnet-0123456789abcdef0,subnet-0123456789abcdef1"
KEY = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
OTHER_KEY = "arn:aws:kms:us-east-1:123456789012:key/99999999-12ab-34cd-56ef-1234567890ab"
REGION_ACCOUNT = "us-east-1:123456789012"


@dataclass(frozen=True)
class Deployed:
    stack: Stack  # with subnets and a volume key
    plain: Stack  # neither, and its outputs under scores/
    processing: dict[str, str]  # credentials of the processing role
    airflow: dict[str, str]  # credentials of a role holding only the Airflow policy
    airflow_role: str
    other_bucket: str
    model: bytes
    policies: dict[str, list[dict]]  # role ARN -> its policy documents, as IAM holds them

    def documents(self, role_arn: str) -> list[dict]:
        return self.policies[role_arn]


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployed]:
    """A moto server of this module's own (its access control is server-wide), the stacks created
    and seeded while it lets every call through, then IAM enforced until the module ends."""
    log = tmp_path_factory.mktemp("moto-iam") / "moto.log"
    with moto_server(log_path=log) as server, pytest.MonkeyPatch.context() as env:
        for key, value in aws_environment(server.endpoint_url).items():
            env.setenv(key, value)
        env.delenv("AWS_SESSION_TOKEN", raising=False)
        stack = create_stack(f"iam-{uuid.uuid4().hex[:8]}", unique_parameters(SubnetIds=SUBNETS, KmsKeyArn=KEY))
        plain = create_stack(f"iam-{uuid.uuid4().hex[:8]}", unique_parameters(OutputPrefix="scores/"))
        s3 = boto3.client("s3")
        model = train_demo_model()
        model_uri = S3Uri.parse(stack["ModelUri"]).join("demo", "model.joblib")
        s3.put_object(Bucket=model_uri.bucket, Key=model_uri.key, Body=model)
        upload_dataset(s3, stack["InputUri"] + "dt=2026-03-09/", demo_dataset((400, 300)))
        other = f"other-{uuid.uuid4().hex[:10]}"
        s3.create_bucket(Bucket=other)
        s3.put_object(Bucket=other, Key="events/a.parquet", Body=b"not yours")
        role = airflow_role(stack)
        roles = [stack["ProcessingRoleArn"], plain["ProcessingRoleArn"], role]
        policies = {arn: role_policies(arn.rsplit("/", 1)[1]) for arn in roles}
        deployed = Deployed(
            stack, plain, assume(stack["ProcessingRoleArn"]), assume(role), role, other, model, policies
        )
        enforce_iam(server.endpoint_url)
        try:
            yield deployed
        finally:
            enforce_iam(server.endpoint_url, enabled=False)


def objects(credentials: dict[str, str]) -> S3ObjectStore:
    return S3ObjectStore(session(credentials).client("s3"))


def uri(base: str, *parts: str) -> S3Uri:
    return S3Uri.parse(base).join(*parts)


def s3_arn(address: S3Uri) -> str:
    return f"arn:aws:s3:::{address.bucket}/{address.key}"


def test_iam_rule_agrees_with_moto_on_every_s3_request_it_can_judge(deployed):
    stack = deployed.stack
    cases = [
        ("s3:GetObject", uri(stack["InputUri"], "dt=2026-03-09", "part-0000.parquet")),
        ("s3:GetObject", uri(stack["ModelUri"], "demo", "model.joblib")),
        ("s3:GetObject", uri(f"s3://{deployed.other_bucket}/", "events", "a.parquet")),
        ("s3:PutObject", uri(stack["OutputUri"], "rule", "x.parquet")),
        ("s3:PutObject", uri(stack["InputUri"], "rule", "x.parquet")),
        ("s3:PutObject", uri(stack["ModelUri"], "rule", "x.joblib")),
    ]
    for role_arn, credentials in [
        (stack["ProcessingRoleArn"], deployed.processing),
        (deployed.airflow_role, deployed.airflow),
    ]:
        store = objects(credentials)
        for action, address in cases:
            rule = evaluate(deployed.documents(role_arn), action, s3_arn(address))
            try:
                if action == "s3:GetObject":
                    store.read(address)
                else:
                    store.put(address, b"x")
                moto = Decision.ALLOWED
            except AccessDenied:
                moto = Decision.IMPLICIT_DENY
            assert (rule, role_arn, action, str(address)) == (moto, role_arn, action, str(address))


def test_processing_role_privilege_runs_a_job_from_the_inputs_and_model_into_the_outputs_only(deployed, tmp_path):
    """SageMaker's part as the role (download, upload) around the processing script itself."""
    stack, s3 = deployed.stack, session(deployed.processing).client("s3")
    inputs = uri(stack["InputUri"], "dt=2026-03-09").as_prefix()
    keys = [item.key for item in S3ObjectStore(s3).list(inputs)]
    download_inputs(s3, inputs, keys, tmp_path / "input")
    model = uri(stack["ModelUri"], "demo", "model.joblib")
    model_path = tmp_path / "model" / "model.joblib"
    model_path.parent.mkdir()
    s3.download_file(model.bucket, model.key, str(model_path))
    script = [sys.executable, str(REPO / "processing_scripts" / "batch_predict.py")]
    options = ["--input-dir", str(tmp_path / "input"), "--output-dir", str(tmp_path / "output")]
    options += ["--model-path", str(model_path), "--model-sha256", hashlib.sha256(deployed.model).hexdigest()]
    subprocess.run([*script, *options, "--workers", "1"], check=True, capture_output=True, timeout=120)

    outputs = uri(stack["OutputUri"], "privilege", "dt=2026-03-09").as_prefix()
    assert upload_outputs(s3, [tmp_path / "output"], outputs) == len(keys) + 1  # and the manifest
    assert sorted(item.key.removeprefix(outputs.key) for item in S3ObjectStore(s3).list(outputs))[:2] == [
        "_manifests/" + next((tmp_path / "output" / "_manifests").iterdir()).name,
        "late/part-0001.parquet",
    ]

    with pytest.raises(S3UploadFailedError, match=r"\(AccessDenied\) when calling the PutObject"):  # read only
        upload_outputs(s3, [tmp_path / "output"], inputs)
    with pytest.raises(AccessDenied, match=r"\(AccessDenied\)"):  # and so is the model prefix
        S3ObjectStore(s3).put(uri(stack["ModelUri"], "demo", "model.joblib"), b"replaced")
    with pytest.raises(AccessDenied, match=r"\(AccessDenied\)"):
        S3ObjectStore(s3).read(uri(f"s3://{deployed.other_bucket}/", "events", "a.parquet"))
    with pytest.raises(AccessDenied, match=r"\(AccessDenied\)"):
        list(S3ObjectStore(s3).list(S3Uri.parse(f"s3://{deployed.other_bucket}/events/")))


def test_airflow_principal_privilege_on_the_bucket(deployed):
    stack, store = deployed.stack, objects(deployed.airflow)
    assert len(list(store.list(uri(stack["InputUri"], "dt=2026-03-09").as_prefix()))) == 2
    assert store.read(uri(stack["ModelUri"], "demo", "model.joblib")) == deployed.model
    store.put(uri(stack["OutputUri"], "airflow", "_SUCCESS"), b"")
    with pytest.raises(AccessDenied, match=r"\(AccessDenied\)"):
        store.put(uri(stack["InputUri"], "dt=2026-03-10", "part-0000.parquet"), b"x")
    with pytest.raises(AccessDenied, match=r"\(AccessDenied\)"):
        store.read(uri(f"s3://{deployed.other_bucket}/", "events", "a.parquet"))


def table_arn(name: str) -> str:
    return f"arn:aws:dynamodb:{REGION_ACCOUNT}:table/{name}"


def test_processing_role_privilege_on_the_job_table_items_only(deployed):
    documents, table = deployed.documents(deployed.stack["ProcessingRoleArn"]), deployed.stack["JobTableName"]
    for action in ("GetItem", "PutItem", "UpdateItem", "BatchWriteItem", "ConditionCheckItem", "Query"):
        assert evaluate(documents, f"dynamodb:{action}", table_arn(table)) is Decision.ALLOWED, action
        assert evaluate(documents, f"dynamodb:{action}", table_arn("another-table")) is Decision.IMPLICIT_DENY
    for action in ("DeleteTable", "UpdateTable", "CreateTable", "DeleteItem", "Scan", "UpdateTimeToLive"):
        assert evaluate(documents, f"dynamodb:{action}", table_arn(table)) is Decision.IMPLICIT_DENY, action
    for action in ("sagemaker:CreateProcessingJob", "iam:PassRole", "sts:AssumeRole"):
        assert evaluate(documents, action, "*") is Decision.IMPLICIT_DENY, action


def test_airflow_principal_privilege_on_processing_jobs_the_role_and_the_table(deployed):
    stack, documents = deployed.stack, deployed.documents(deployed.airflow_role)
    job = f"arn:aws:sagemaker:{REGION_ACCOUNT}:processing-job/demo-0123456789ab-a1"
    for action in ("CreateProcessingJob", "DescribeProcessingJob", "StopProcessingJob", "AddTags"):
        assert evaluate(documents, f"sagemaker:{action}", job) is Decision.ALLOWED, action
    training = f"arn:aws:sagemaker:{REGION_ACCOUNT}:training-job/demo"
    assert evaluate(documents, "sagemaker:CreateTrainingJob", training) is Decision.IMPLICIT_DENY
    # Prepare may read where a model came from (a training job, a registry package), never change it.
    assert evaluate(documents, "sagemaker:DescribeTrainingJob", training) is Decision.ALLOWED
    package = f"arn:aws:sagemaker:{REGION_ACCOUNT}:model-package/churn/3"
    assert evaluate(documents, "sagemaker:DescribeModelPackage", package) is Decision.ALLOWED
    assert evaluate(documents, "sagemaker:ListModelPackages", "*") is Decision.ALLOWED
    assert evaluate(documents, "sagemaker:UpdateModelPackage", package) is Decision.IMPLICIT_DENY
    assert evaluate(documents, "sagemaker:DeleteModel", "*") is Decision.IMPLICIT_DENY

    to_sagemaker = {"iam:PassedToService": "sagemaker.amazonaws.com"}
    assert evaluate(documents, "iam:PassRole", stack["ProcessingRoleArn"], to_sagemaker) is Decision.ALLOWED
    assert evaluate(documents, "iam:PassRole", deployed.airflow_role, to_sagemaker) is Decision.IMPLICIT_DENY
    to_ec2 = {"iam:PassedToService": "ec2.amazonaws.com"}
    assert evaluate(documents, "iam:PassRole", stack["ProcessingRoleArn"], to_ec2) is Decision.IMPLICIT_DENY

    table = table_arn(stack["JobTableName"])
    for action in ("GetItem", "BatchGetItem", "PutItem", "UpdateItem", "Query", "DescribeTable"):
        assert evaluate(documents, f"dynamodb:{action}", table) is Decision.ALLOWED, action
    assert evaluate(documents, "dynamodb:Query", f"{table}/index/by_pipeline") is Decision.ALLOWED
    assert evaluate(documents, "dynamodb:GetItem", table_arn("another-table")) is Decision.IMPLICIT_DENY
    for action in ("DeleteTable", "CreateTable", "UpdateTable"):
        assert evaluate(documents, f"dynamodb:{action}", table) is Decision.IMPLICIT_DENY, action


def test_processing_role_privilege_for_vpc_jobs_and_the_volume_key_only_when_given(deployed):
    with_both = deployed.documents(deployed.stack["ProcessingRoleArn"])
    neither = deployed.documents(deployed.plain["ProcessingRoleArn"])
    for action in ("ec2:CreateNetworkInterface", "ec2:DeleteNetworkInterface", "ec2:DescribeSubnets"):
        assert evaluate(with_both, action, "*") is Decision.ALLOWED, action
        assert evaluate(neither, action, "*") is Decision.IMPLICIT_DENY, action
    assert evaluate(with_both, "ec2:RunInstances", "*") is Decision.IMPLICIT_DENY

    for action in ("kms:Decrypt", "kms:GenerateDataKeyWithoutPlaintext", "kms:DescribeKey"):
        assert evaluate(with_both, action, KEY) is Decision.ALLOWED, action
        assert evaluate(with_both, action, OTHER_KEY) is Decision.IMPLICIT_DENY, action
        assert evaluate(neither, action, KEY) is Decision.IMPLICIT_DENY, action
    for_aws = {"kms:GrantIsForAWSResource": "true"}
    assert evaluate(with_both, "kms:CreateGrant", KEY, for_aws) is Decision.ALLOWED
    assert evaluate(with_both, "kms:CreateGrant", KEY, {"kms:GrantIsForAWSResource": "false"}) is (
        Decision.IMPLICIT_DENY
    )
    assert evaluate(with_both, "kms:CreateGrant", OTHER_KEY, for_aws) is Decision.IMPLICIT_DENY
    assert evaluate(with_both, "kms:ScheduleKeyDeletion", KEY) is Decision.IMPLICIT_DENY


def test_processing_role_privilege_follows_the_output_prefix_parameter(deployed):
    plain = deployed.plain
    documents = deployed.documents(plain["ProcessingRoleArn"])
    bucket = plain["DataBucketName"]
    assert plain["OutputUri"] == f"s3://{bucket}/scores/"
    assert evaluate(documents, "s3:PutObject", f"arn:aws:s3:::{bucket}/scores/p/x.parquet") is Decision.ALLOWED
    assert evaluate(documents, "s3:PutObject", f"arn:aws:s3:::{bucket}/predictions/x") is Decision.IMPLICIT_DENY
