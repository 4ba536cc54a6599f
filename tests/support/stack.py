"""The CloudFormation stack of ``infra/shardflow.yaml`` in a moto server: create or update it, read
its outputs and the policies it deployed, act as the roles it made, switch moto's IAM checks on."""

from __future__ import annotations

import json
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3

TEMPLATE = Path(__file__).resolve().parents[2] / "infra" / "shardflow.yaml"
ACCOUNT_ROOT = "arn:aws:iam::123456789012:root"  # moto's default account


@dataclass(frozen=True)
class Stack:
    """A deployed stack: its name, the parameters it was given and its outputs."""

    name: str
    parameters: dict[str, str]
    outputs: dict[str, str]

    def __getitem__(self, output: str) -> str:
        return self.outputs[output]

    @property
    def processing_role(self) -> str:
        return self["ProcessingRoleArn"].rsplit("/", 1)[1]


def unique_parameters(**overrides: str) -> dict[str, str]:
    """Names no other test uses (bucket, table, role and repository names are account-wide)."""
    tag = uuid.uuid4().hex[:10]
    return {
        "Environment": f"t{tag}",
        "DataBucketName": f"shardflow-{tag}",
        "JobTableName": f"jobs-{tag}",
        "ImageRepositoryName": f"shardflow-processing-{tag}",
    } | overrides


def _deploy(action: str, name: str, parameters: dict[str, str]) -> Stack:
    cfn = boto3.client("cloudformation")
    getattr(cfn, action)(
        StackName=name,
        TemplateBody=TEMPLATE.read_text(),
        Capabilities=["CAPABILITY_NAMED_IAM"],
        Parameters=[{"ParameterKey": key, "ParameterValue": value} for key, value in parameters.items()],
    )
    (described,) = cfn.describe_stacks(StackName=name)["Stacks"]
    expected = "CREATE_COMPLETE" if action == "create_stack" else "UPDATE_COMPLETE"
    assert described["StackStatus"] == expected, described.get("StackStatusReason")
    return Stack(name, parameters, {o["OutputKey"]: o["OutputValue"] for o in described.get("Outputs", [])})


def create_stack(name: str, parameters: dict[str, str]) -> Stack:
    return _deploy("create_stack", name, parameters)


def update_stack(stack: Stack, **changes: str) -> Stack:
    return _deploy("update_stack", stack.name, stack.parameters | changes)


def role_policies(role: str) -> list[dict[str, Any]]:
    """Every policy document on an IAM role, inline and attached, as IAM holds them."""
    iam = boto3.client("iam")
    documents = [
        iam.get_role_policy(RoleName=role, PolicyName=name)["PolicyDocument"]
        for name in iam.list_role_policies(RoleName=role)["PolicyNames"]
    ]
    for attached in iam.list_attached_role_policies(RoleName=role)["AttachedPolicies"]:
        documents.append(managed_policy(attached["PolicyArn"]))
    return [json.loads(d) if isinstance(d, str) else d for d in documents]


def managed_policy(arn: str) -> dict[str, Any]:
    iam = boto3.client("iam")
    version = iam.get_policy(PolicyArn=arn)["Policy"]["DefaultVersionId"]
    document = iam.get_policy_version(PolicyArn=arn, VersionId=version)["PolicyVersion"]["Document"]
    return json.loads(document) if isinstance(document, str) else document


def _assumable_role(iam: Any, name: str) -> str:
    """A new role the account's root may assume, with no policy yet; its ARN."""
    trust = {"Effect": "Allow", "Principal": {"AWS": ACCOUNT_ROOT}, "Action": "sts:AssumeRole"}
    return str(
        iam.create_role(
            RoleName=name, AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [trust]})
        )["Role"]["Arn"]
    )


def airflow_role(stack: Stack) -> str:
    """A role standing for MWAA's execution role: the stack's Airflow policy attached, nothing else."""
    iam = boto3.client("iam")
    name = f"{stack.parameters['Environment']}-airflow-execution"
    arn = _assumable_role(iam, name)
    iam.attach_role_policy(RoleName=name, PolicyArn=stack["AirflowPolicyArn"])
    return str(arn)


def assume(role_arn: str) -> dict[str, str]:
    """Credentials of ``role_arn`` from STS, as the variables boto3 reads."""
    credentials = boto3.client("sts").assume_role(RoleArn=role_arn, RoleSessionName="shardflow-tests")["Credentials"]
    return {
        "AWS_ACCESS_KEY_ID": credentials["AccessKeyId"],
        "AWS_SECRET_ACCESS_KEY": credentials["SecretAccessKey"],
        "AWS_SESSION_TOKEN": credentials["SessionToken"],
    }


def session(credentials: dict[str, str]) -> boto3.Session:
    return boto3.Session(
        aws_access_key_id=credentials["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=credentials["AWS_SECRET_ACCESS_KEY"],
        aws_session_token=credentials["AWS_SESSION_TOKEN"],
    )


def enforce_iam(endpoint_url: str, enabled: bool = True) -> None:
    """Switch moto's IAM-based access control on (every request is checked against its caller's
    policies) or off. Server-wide: only for a server of one's own."""
    request = urllib.request.Request(
        f"{endpoint_url}/moto-api/reset-auth",
        data=b"0" if enabled else b"inf",
        method="POST",
        headers={"Content-Type": "text/plain"},  # a form body would hide the count from moto
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert json.loads(response.read())["status"] == "ok"


def table_stand_in(stack: Stack) -> str:
    """A role moto lets make every DynamoDB call, to make a role's calls in its stead: moto judges
    DynamoDB requests against no table, so a role scoped to its table is refused them all. The
    caller judges each call it makes against the role's own documents
    (``support.iam_policy.dynamodb_requests``)."""
    iam = boto3.client("iam")
    name = f"{stack.parameters['Environment']}-table-stand-in"
    arn = _assumable_role(iam, name)
    anything = {"Effect": "Allow", "Action": "dynamodb:*", "Resource": "*"}
    iam.put_role_policy(
        RoleName=name,
        PolicyName="any-dynamodb-call",
        PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [anything]}),
    )
    return str(arn)
