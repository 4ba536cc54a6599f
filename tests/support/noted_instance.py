"""One instance of a processing job, as SageMaker starts it, every AWS call noted:

    python noted_instance.py CALLS.jsonl <the script's command line>

The package's processing script (as ``processing_scripts/batch_predict.py`` runs it) with the
DynamoDB job store and S3, each request's service, operation and parameters appended to
CALLS.jsonl. S3 is reached with the environment's credentials (the processing role's, judged by
moto). DynamoDB is reached with ``TABLE_ACCESS_KEY_ID``, ``TABLE_SECRET_ACCESS_KEY`` and
``TABLE_SESSION_TOKEN``: a stand-in moto lets through, since it judges no DynamoDB request by its
table; the test judges each noted call by the role's own policy (``support.iam_policy``).
"""

from __future__ import annotations

# First: the script sets Arrow's allocator up before anything loads Arrow.
from shardflow.processing.script import main  # isort: skip

import json
import os
import sys
from typing import Any

import boto3

from shardflow.aws.jobstore import JobStore
from shardflow.aws.s3 import S3ObjectStore

calls = open(sys.argv[1], "a")  # noqa: SIM115 - open while the instance runs


def note(params: dict[str, Any], model: Any, **_: Any) -> None:
    line = {"service": model.service_model.service_name, "operation": model.name, "params": params}
    calls.write(json.dumps(line, default=str) + "\n")
    calls.flush()


def open_store(table: str) -> JobStore:
    stand_in = boto3.Session(
        aws_access_key_id=os.environ["TABLE_ACCESS_KEY_ID"],
        aws_secret_access_key=os.environ["TABLE_SECRET_ACCESS_KEY"],
        aws_session_token=os.environ["TABLE_SESSION_TOKEN"],
    )
    client = stand_in.client("dynamodb")
    client.meta.events.register("provide-client-params", note)
    return JobStore(client, table)


def open_objects() -> S3ObjectStore:
    client = boto3.client("s3")
    client.meta.events.register("provide-client-params", note)
    return S3ObjectStore(client)


if __name__ == "__main__":
    sys.exit(main(sys.argv[2:], open_store=open_store, open_objects=open_objects))
