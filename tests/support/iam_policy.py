"""IAM's evaluation of identity policies, for the requests moto's access control cannot judge.

moto checks a request's resource only for S3 (and IAM, STS, SQS); a DynamoDB or SageMaker request
is checked against the resource ``*``, which no statement scoped to an ARN matches, and it never
checks ``iam:PassRole`` or a condition key it does not receive. For those, this module decides as
IAM does within one account, without permission boundaries or organisation policies:

- a statement applies when its ``Action`` (or ``NotAction``) covers the action, its ``Resource``
  (or ``NotResource``) covers the resource, and every condition holds;
- an applicable ``Deny`` wins; else an applicable ``Allow`` allows; else the request is denied.

Actions match case-insensitively, resources case-sensitively, both with the ``*`` and ``?``
wildcards. A condition operator it does not know raises ``ValueError`` rather than guess.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from enum import Enum
from typing import Any

__all__ = ["Decision", "dynamodb_requests", "evaluate"]


class Decision(Enum):
    ALLOWED = "allowed"
    EXPLICIT_DENY = "explicitly denied"
    IMPLICIT_DENY = "not allowed by any statement"


def _listed(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def _matches(pattern: str, value: str, *, ignore_case: bool) -> bool:
    regex = re.escape(pattern).replace(r"\*", ".*").replace(r"\?", ".")  # IAM's only wildcards
    return re.fullmatch(regex, value, re.IGNORECASE if ignore_case else 0) is not None


def _covers(statement: Mapping[str, Any], key: str, value: str, *, ignore_case: bool) -> bool:
    if key in statement:
        return any(_matches(p, value, ignore_case=ignore_case) for p in _listed(statement[key]))
    negated = f"Not{key}"
    if negated in statement:
        return not any(_matches(p, value, ignore_case=ignore_case) for p in _listed(statement[negated]))
    raise ValueError(f"statement {statement.get('Sid', '')!r} has neither {key} nor Not{key}")


def _string_equals(expected: str, actual: str) -> bool:
    return expected == actual


def _string_like(expected: str, actual: str) -> bool:
    return _matches(expected, actual, ignore_case=False)


def _bool(expected: str, actual: str) -> bool:
    return str(expected).lower() == str(actual).lower()


_OPERATORS = {
    "StringEquals": (_string_equals, False),
    "StringNotEquals": (_string_equals, True),
    "StringLike": (_string_like, False),
    "StringNotLike": (_string_like, True),
    "ArnEquals": (_string_equals, False),
    "ArnLike": (_string_like, False),
    "Bool": (_bool, False),
}


def _condition_holds(operator: str, key: str, expected: Any, context: Mapping[str, str]) -> bool:
    name, if_exists = (operator.removesuffix("IfExists"), operator.endswith("IfExists"))
    if name not in _OPERATORS:
        raise ValueError(f"condition operator {operator!r} is not supported by this evaluator: add it")
    compare, negated = _OPERATORS[name]
    if key not in context:
        # A missing key fails a positive test, passes a negated one, and passes any ...IfExists.
        return if_exists or negated
    matched = any(compare(str(value), context[key]) for value in _listed(expected))
    return not matched if negated else matched


def _applies(statement: Mapping[str, Any], action: str, resource: str, context: Mapping[str, str]) -> bool:
    if not _covers(statement, "Action", action, ignore_case=True):
        return False
    if not _covers(statement, "Resource", resource, ignore_case=False):
        return False
    return all(
        _condition_holds(operator, key, expected, context)
        for operator, keys in statement.get("Condition", {}).items()
        for key, expected in keys.items()
    )


def evaluate(
    documents: Iterable[Mapping[str, Any]], action: str, resource: str, context: Mapping[str, str] | None = None
) -> Decision:
    """IAM's decision on ``action`` against ``resource`` for a principal holding ``documents``.

    :param context: the request's condition keys, such as ``{"iam:PassedToService": "sagemaker.amazonaws.com"}``.
    """
    allowed = False
    for document in documents:
        statements = document["Statement"]
        for statement in [statements] if isinstance(statements, Mapping) else statements:
            if _applies(statement, action, resource, context or {}):
                if statement["Effect"] == "Deny":
                    return Decision.EXPLICIT_DENY
                allowed = True
    return Decision.ALLOWED if allowed else Decision.IMPLICIT_DENY


#: The IAM action of each item of a DynamoDB transaction: a transaction has no action of its own.
_TRANSACTION_ITEMS = {
    "ConditionCheck": "ConditionCheckItem",
    "Put": "PutItem",
    "Update": "UpdateItem",
    "Delete": "DeleteItem",
    "Get": "GetItem",
}


def dynamodb_requests(operation: str, params: Mapping[str, Any], table_arns: str) -> list[tuple[str, str]]:
    """The (action, resource) pairs IAM checks for one DynamoDB call: each item of a transaction
    as its own action, each table of a batch, and an index as ``<table>/index/<name>``.

    :param operation: the API operation, as botocore names it (``TransactWriteItems``).
    :param params: the call's parameters.
    :param table_arns: the ARN of a table without its name (``arn:aws:dynamodb:<region>:<account>:table/``).
    """
    if operation in ("TransactWriteItems", "TransactGetItems"):
        return [
            (f"dynamodb:{_TRANSACTION_ITEMS[kind]}", table_arns + body["TableName"])
            for item in params["TransactItems"]
            for kind, body in item.items()
        ]
    if operation in ("BatchGetItem", "BatchWriteItem"):
        return [(f"dynamodb:{operation}", table_arns + table) for table in params["RequestItems"]]
    resource = table_arns + params["TableName"]
    if params.get("IndexName"):
        resource += f"/index/{params['IndexName']}"
    return [(f"dynamodb:{operation}", resource)]
