"""The AWS adapters name every external fault: a missing object, bucket or job table, and refused
access, each one line naming the resource and what to do, never a botocore traceback."""

from __future__ import annotations

import io
import logging

import boto3
import pytest
from botocore.stub import Stubber
from support.records import sample_job

from shardflow.aws.jobstore import JobStore
from shardflow.aws.s3 import S3ObjectStore
from shardflow.core.s3uri import S3Uri
from shardflow.errors import AccessDenied, BucketNotFound, JobTableNotFound, ObjectNotFound, ResourceError


def test_bad_input_a_missing_object_is_named(s3, bucket):
    uri = S3Uri(bucket, "models/nope.joblib")
    with pytest.raises(ObjectNotFound) as missing:
        S3ObjectStore(s3).download(uri, io.BytesIO())
    assert (
        str(missing.value)
        == f"no object at s3://{bucket}/models/nope.joblib: check the address (and that it was uploaded)"
    )
    with pytest.raises(ObjectNotFound, match="no object at"):
        S3ObjectStore(s3).read(uri)


def test_bad_input_a_missing_bucket_is_named(s3):
    with pytest.raises(BucketNotFound) as missing:
        list(S3ObjectStore(s3).list(S3Uri("no-such-bucket-here", "events/")))
    assert str(missing.value) == (
        "bucket 'no-such-bucket-here' does not exist (s3:ListBucket on s3://no-such-bucket-here/events/): "
        "check the address, or create the bucket"
    )


def test_bad_input_a_missing_job_table_is_named_with_its_region(aws):
    store = JobStore(boto3.client("dynamodb"), "no-such-table")
    with pytest.raises(JobTableNotFound) as missing:
        store.get_job("demo-000000000001")
    assert str(missing.value).startswith("job table 'no-such-table' does not exist in us-east-1: create it")
    with pytest.raises(JobTableNotFound):
        store.create_job(sample_job(), [])


def test_bad_input_refused_access_is_named_and_the_traceback_goes_to_the_debug_log(aws, caplog):
    s3 = boto3.client("s3")
    with Stubber(s3) as stub:
        stub.add_client_error("get_object", service_error_code="AccessDenied", http_status_code=403)
        with caplog.at_level(logging.DEBUG, logger="shardflow.aws.s3"), pytest.raises(AccessDenied) as denied:
            S3ObjectStore(s3).read(S3Uri("shardflow-demo", "models/m.joblib"))
    assert str(denied.value) == (
        "access denied to s3://shardflow-demo/models/m.joblib (AccessDenied): give the credentials in use "
        "s3:GetObject on it, or check which credentials are in use"
    )
    assert denied.value.__cause__ is None and denied.value.__suppress_context__
    assert any(r.levelno == logging.DEBUG and r.exc_info for r in caplog.records)

    dynamodb = boto3.client("dynamodb")
    with Stubber(dynamodb) as stub:
        stub.add_client_error("get_item", service_error_code="AccessDeniedException", http_status_code=400)
        with pytest.raises(AccessDenied, match="access denied to job table 'shardflow-jobs' in us-east-1"):
            JobStore(dynamodb, "shardflow-jobs").get_job("demo-000000000001")


def test_bad_input_other_faults_are_not_renamed(aws):
    dynamodb = boto3.client("dynamodb")
    with Stubber(dynamodb) as stub:
        stub.add_client_error("get_item", service_error_code="ProvisionedThroughputExceededException")
        with pytest.raises(Exception) as raised:
            JobStore(dynamodb, "shardflow-jobs").get_job("demo-000000000001")
    assert not isinstance(raised.value, ResourceError)
