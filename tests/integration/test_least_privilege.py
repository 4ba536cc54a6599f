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
import io
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pyarrow.parquet as pq
import pytest
from boto3.exceptions import S3UploadFailedError
from support.iam_policy import Decision, dynamodb_requests, evaluate
from support.models import paced_model_bytes
from support.records import sample_job_spec
from support.stack import (
    Stack,
    airflow_role,
    assume,
    create_stack,
    enforce_iam,
    role_policies,
    session,
    table_stand_in,
    unique_parameters,
)

from shardflow.aws.jobstore import JobStore
from shardflow.aws.s3 import S3ObjectStore
from shardflow.compute.local_runner import download_inputs, upload_outputs
from shardflow.compute.sagemaker_request import container_arguments
from shardflow.contract import ENV_CONFIG_DIR, ENV_PROCESSING_JOB, INPUT_DIR, OUTPUT_DIR
from shardflow.core.invocation import container_model_path
from shardflow.core.ports import ProcessingRequest
from shardflow.core.prepare import prepare_job
from shardflow.core.record import JobStatus
from shardflow.core.s3uri import S3Uri
from shardflow.core.units import UnitState
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
    table: dict[str, str]  # credentials moto lets make any DynamoDB call (it judges none by table)
    paced_model: bytes  # under ModelUri paced/model.joblib: slow enough for a lease to be renewed

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
        paced = seed_dynamic_job(s3, stack)
        role = airflow_role(stack)
        roles = [stack["ProcessingRoleArn"], plain["ProcessingRoleArn"], role]
        policies = {arn: role_policies(arn.rsplit("/", 1)[1]) for arn in roles}
        table = assume(table_stand_in(stack))
        deployed = Deployed(
            stack, plain, assume(stack["ProcessingRoleArn"]), assume(role), role, other, model, policies, table, paced
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
    for action in ("GetItem", "BatchGetItem", "PutItem", "UpdateItem", "BatchWriteItem", "ConditionCheckItem", "Query"):
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


# --- a dynamic job: the instances claim units and read and write S3 themselves ----------------

DYNAMIC = "dt=2026-03-11"


def seed_dynamic_job(s3, stack: Stack) -> bytes:
    """A dynamic job's inputs (an object of four row groups, to be split, and a small one) and a
    model slow enough that an instance holds a unit across a lease renewal; returns the model."""
    buffer = io.BytesIO()
    pq.write_table(demo_dataset((2_000,))["part-0000.parquet"], buffer, row_group_size=500)
    big = uri(stack["InputUri"], DYNAMIC, "big.parquet")
    s3.put_object(Bucket=big.bucket, Key=big.key, Body=buffer.getvalue())
    upload_dataset(s3, str(uri(stack["InputUri"], DYNAMIC).as_prefix()), demo_dataset((100,)))
    model = paced_model_bytes(0.7)
    where = uri(stack["ModelUri"], "paced", "model.joblib")
    s3.put_object(Bucket=where.bucket, Key=where.key, Body=model)
    return model


def noting(client, calls: list) -> Any:
    client.meta.events.register("provide-client-params", lambda params, model, **_: calls.append((model.name, params)))
    return client


def judged(documents: list[dict], calls) -> dict[tuple[str, str], Decision]:
    """IAM's decision on every action and table of the DynamoDB calls."""
    arns = f"arn:aws:dynamodb:{REGION_ACCOUNT}:table/"
    return {
        pair: evaluate(documents, *pair)
        for operation, params in calls
        for pair in dynamodb_requests(operation, params, arns)
    }


def test_dynamic_job_privilege_prepare_and_the_instance_claiming_and_staging_its_units(deployed, tmp_path):
    """Prepare as the Airflow principal, then one instance of the attempt as the processing role:
    it claims each unit, renews its lease, reads the unit from the inputs (ranged reads of a split
    object), uploads its output to staging and records it done. S3 is judged by moto; every
    DynamoDB call is judged by the role's own policy."""
    stack, table = deployed.stack, deployed.stack["JobTableName"]
    airflow_s3 = session(deployed.airflow).client("s3")
    airflow_calls: list = []
    airflow_store = JobStore(noting(session(deployed.table).client("dynamodb"), airflow_calls), table)
    job = sample_job_spec(
        f"privilege-{uuid.uuid4().hex[:8]}",
        stack["DataBucketName"],
        backend="sagemaker",
        model_uri=str(uri(stack["ModelUri"], "paced", "model.joblib")),
        model_sha256=hashlib.sha256(deployed.paced_model).hexdigest(),
        input_prefix=str(uri(stack["InputUri"], DYNAMIC).as_prefix()),
        output_prefix=str(uri(stack["OutputUri"], "dynamic", DYNAMIC).as_prefix()),
        instance_count=1,
        distribution="dynamic",
        split_objects=True,
        lease_seconds=5,
        max_attempts=1,
    )
    record = prepare_job(job, airflow_store, S3ObjectStore(airflow_s3))
    units = airflow_store.list_units(record.job_id)
    assert record.distribution == "dynamic" and len(units) >= 3 and max(u.parts for u in units) > 1
    name = f"{record.job_id}-a1"
    record = airflow_store.transition(record, JobStatus.SUBMITTED, attempt=1, processing_jobs=[name])
    keys = tuple(f"{S3Uri.parse(job.input.prefix).key}{f.key}" for f in airflow_store.list_files(record.job_id))
    request = ProcessingRequest.for_attempt(
        record.job, job_id=record.job_id, job_table=table, attempt=1, job_name=name, input_keys=keys, units=len(units)
    )

    # SageMaker's part as the processing role: the model input (there is no data input).
    processing_s3 = session(deployed.processing).client("s3")
    model_path = tmp_path / "model" / "model.joblib"
    model_path.parent.mkdir()
    processing_s3.download_file(S3Uri.parse(job.model.uri).bucket, S3Uri.parse(job.model.uri).key, str(model_path))
    local = {INPUT_DIR: str(tmp_path / "input"), OUTPUT_DIR: str(tmp_path / "output")}
    local[container_model_path(request.artifact)] = str(model_path)
    argv = [local.get(a, a) for a in container_arguments(request)] + ["--workers", "1"]
    assert "--claim-units" in argv
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "resourceconfig.json").write_text('{"current_host": "algo-1", "hosts": ["algo-1"]}')
    environment = {**os.environ, **deployed.processing, **request.environment()}
    environment |= {f"TABLE_{k.removeprefix('AWS_')}": v for k, v in deployed.table.items()}
    environment |= {ENV_CONFIG_DIR: str(tmp_path / "config"), ENV_PROCESSING_JOB: name}
    environment["PYTHONPATH"] = os.pathsep.join([str(REPO / "tests"), environment.get("PYTHONPATH", "")])
    calls_file = tmp_path / "calls.jsonl"
    run = subprocess.run(
        [sys.executable, str(REPO / "tests" / "support" / "noted_instance.py"), str(calls_file), *argv],
        env=environment,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert run.returncode == 0, run.stderr[-3000:]

    # Every unit was done by the instance, its output staged under its claim token.
    done = airflow_store.list_units(record.job_id)
    assert [u.state for u in done] == [UnitState.DONE] * len(units), run.stderr[-3000:]
    staging = uri(job.output.prefix, "_staging", record.job_id).as_prefix()
    staged = {o.key.removeprefix(staging.key) for o in S3ObjectStore(airflow_s3).list(staging)}
    assert {u.staged for u in done} <= staged
    assert all(str(u.staged).startswith(f"attempt-1/_units/{u.token}/") for u in done)

    calls = [json.loads(line) for line in calls_file.read_text().splitlines()]
    table_calls = [(c["operation"], c["params"]) for c in calls if c["service"] == "dynamodb"]
    decisions = judged(deployed.documents(stack["ProcessingRoleArn"]), table_calls)
    assert {pair for pair, d in decisions.items() if d is not Decision.ALLOWED} == set()
    actions = {action.removeprefix("dynamodb:") for action, _ in decisions}
    # claims and results (transactions), renewals, the unit list and a split object's parts
    assert {"ConditionCheckItem", "UpdateItem", "PutItem", "Query", "BatchGetItem"} <= actions
    renewals = [
        p for op, p in table_calls if op == "UpdateItem" and p["UpdateExpression"] == "SET lease_until = :until"
    ]
    assert renewals, "no lease was renewed"
    s3_calls = [(c["operation"], c["params"]) for c in calls if c["service"] == "s3"]
    assert any(op == "GetObject" and p.get("Range") for op, p in s3_calls), "no ranged read of a split object"
    puts = [p["Key"] for op, p in s3_calls if op in ("PutObject", "CreateMultipartUpload")]
    assert puts and all(k.startswith(f"{staging.key}attempt-1/_units/") for k in puts), puts

    # Prepare and the unit list publish reads, as the Airflow principal.
    airflow = judged(deployed.documents(deployed.airflow_role), airflow_calls)
    assert {pair for pair, d in airflow.items() if d is not Decision.ALLOWED} == set()
    assert {"BatchWriteItem", "Query"} <= {action.removeprefix("dynamodb:") for action, _ in airflow}
