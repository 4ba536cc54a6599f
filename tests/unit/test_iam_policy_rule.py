"""The IAM evaluation rule (tests/support/iam_policy.py) that judges what moto's access control
cannot: each of IAM's rules it relies on, on small documents."""

import pytest
from support.iam_policy import Decision, evaluate

TABLE = "arn:aws:dynamodb:us-east-1:123456789012:table/jobs"


def policy(*statements: dict) -> list[dict]:
    return [{"Version": "2012-10-17", "Statement": list(statements)}]


def allow(action, resource, **extra) -> dict:
    return {"Effect": "Allow", "Action": action, "Resource": resource, **extra}


def test_iam_rule_allows_only_what_a_statement_names():
    documents = policy(allow(["dynamodb:GetItem", "dynamodb:Query"], [TABLE, f"{TABLE}/index/*"]))
    assert evaluate(documents, "dynamodb:GetItem", TABLE) is Decision.ALLOWED
    assert evaluate(documents, "DynamoDB:getitem", TABLE) is Decision.ALLOWED  # actions ignore case
    assert evaluate(documents, "dynamodb:Query", f"{TABLE}/index/by_status") is Decision.ALLOWED
    assert evaluate(documents, "dynamodb:DeleteTable", TABLE) is Decision.IMPLICIT_DENY
    assert evaluate(documents, "dynamodb:GetItem", TABLE + "-other") is Decision.IMPLICIT_DENY
    assert evaluate(documents, "dynamodb:GetItem", TABLE.replace("jobs", "JOBS")) is Decision.IMPLICIT_DENY


def test_iam_rule_wildcards_are_star_and_question_mark_only():
    documents = policy(allow("s3:Get*", "arn:aws:s3:::b/in/?.parquet"))
    assert evaluate(documents, "s3:GetObject", "arn:aws:s3:::b/in/a.parquet") is Decision.ALLOWED
    assert evaluate(documents, "s3:GetObject", "arn:aws:s3:::b/in/ab.parquet") is Decision.IMPLICIT_DENY
    assert evaluate(documents, "s3:GetObject", "arn:aws:s3:::b/inXa.parquet") is Decision.IMPLICIT_DENY
    assert evaluate(policy(allow("s3:GetObject", "arn:aws:s3:::b/[ab]")), "s3:GetObject", "arn:aws:s3:::b/a") is (
        Decision.IMPLICIT_DENY
    )


def test_iam_rule_explicit_deny_wins_over_any_allow():
    documents = policy(allow("s3:*", "*"), {"Effect": "Deny", "Action": "s3:DeleteObject", "Resource": "*"})
    assert evaluate(documents, "s3:PutObject", "arn:aws:s3:::b/k") is Decision.ALLOWED
    assert evaluate(documents, "s3:DeleteObject", "arn:aws:s3:::b/k") is Decision.EXPLICIT_DENY


def test_iam_rule_not_action_and_not_resource_invert_the_match():
    documents = policy({"Effect": "Allow", "NotAction": "iam:*", "NotResource": "arn:aws:s3:::secret/*"})
    assert evaluate(documents, "s3:GetObject", "arn:aws:s3:::open/k") is Decision.ALLOWED
    assert evaluate(documents, "s3:GetObject", "arn:aws:s3:::secret/k") is Decision.IMPLICIT_DENY
    assert evaluate(documents, "iam:PassRole", "arn:aws:iam::1:role/r") is Decision.IMPLICIT_DENY


def test_iam_rule_conditions_must_all_hold_and_a_missing_key_fails_them():
    role = "arn:aws:iam::123456789012:role/processing"
    documents = policy(
        allow("iam:PassRole", role, Condition={"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}})
    )
    assert evaluate(documents, "iam:PassRole", role, {"iam:PassedToService": "sagemaker.amazonaws.com"}) is (
        Decision.ALLOWED
    )
    assert evaluate(documents, "iam:PassRole", role, {"iam:PassedToService": "ec2.amazonaws.com"}) is (
        Decision.IMPLICIT_DENY
    )
    assert evaluate(documents, "iam:PassRole", role) is Decision.IMPLICIT_DENY
    grants = policy(allow("kms:CreateGrant", "*", Condition={"Bool": {"kms:GrantIsForAWSResource": "true"}}))
    assert evaluate(grants, "kms:CreateGrant", "k", {"kms:GrantIsForAWSResource": "True"}) is Decision.ALLOWED
    assert evaluate(grants, "kms:CreateGrant", "k", {"kms:GrantIsForAWSResource": "false"}) is (Decision.IMPLICIT_DENY)


def test_iam_rule_negated_and_if_exists_conditions_pass_on_a_missing_key():
    documents = policy(
        allow("s3:PutObject", "*", Condition={"StringNotEquals": {"s3:x-amz-acl": "public-read"}}),
        allow("s3:GetObject", "*", Condition={"StringLikeIfExists": {"s3:prefix": "in/*"}}),
    )
    assert evaluate(documents, "s3:PutObject", "k") is Decision.ALLOWED
    assert evaluate(documents, "s3:PutObject", "k", {"s3:x-amz-acl": "public-read"}) is Decision.IMPLICIT_DENY
    assert evaluate(documents, "s3:GetObject", "k") is Decision.ALLOWED
    assert evaluate(documents, "s3:GetObject", "k", {"s3:prefix": "out/x"}) is Decision.IMPLICIT_DENY


def test_iam_rule_refuses_an_operator_it_does_not_know():
    documents = policy(allow("s3:GetObject", "*", Condition={"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}))
    with pytest.raises(ValueError, match="'IpAddress' is not supported"):
        evaluate(documents, "s3:GetObject", "k", {"aws:SourceIp": "10.1.2.3"})
