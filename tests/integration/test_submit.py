"""Submitting an attempt against a real moto server: names recorded first, taken names reconnect,
refused requests fail the job for good."""

from __future__ import annotations

import pytest
from support.records import sample_job

from shardflow.compute import get_backend
from shardflow.core.lifecycle import submit_job
from shardflow.core.record import FileRecord, JobRecord, JobStatus
from shardflow.errors import JobFailed

IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/shardflow-processing:0.1.0"
ROLE = "arn:aws:iam::123456789012:role/shardflow-dev-processing"


def sagemaker_job(store, bucket: str, image: str = IMAGE) -> JobRecord:
    record = sample_job(
        "churn-000000000001",
        bucket,
        backend="sagemaker",
        instance_type="ml.m5.xlarge",
        instance_count=2,
        max_runtime_seconds=3600,
        sagemaker={"image_uri": image, "role_arn": ROLE},
    )
    return store.create_job(record, [FileRecord(key=f"part-{i}.parquet", size=10) for i in range(3)])


def test_a_refused_request_fails_the_job_for_good_with_the_reason(aws, store, bucket):
    record = sagemaker_job(store, bucket, image=IMAGE.replace("us-east-1", "eu-west-1"))
    backend = get_backend("sagemaker", region_name="us-east-1")

    with pytest.raises(JobFailed, match="refused processing job churn-000000000001-a1") as failure:
        submit_job(record.job_id, store, backend)

    assert "Fix the pipeline spec and trigger a new run" in str(failure.value)
    stored = store.get_job(record.job_id)
    assert stored.status is JobStatus.FAILED and "eu-west-1" in stored.error
    assert backend.describe("churn-000000000001-a1") is None  # nothing was sent


def test_a_name_taken_by_an_earlier_try_is_a_reconnect_not_a_second_job(aws, store, bucket, s3):
    record = sagemaker_job(store, bucket)
    backend = get_backend("sagemaker", region_name="us-east-1")
    name = "churn-000000000001-a1"
    first = submit_job(record.job_id, store, backend)  # the task starts the job...
    assert first.current_processing_job == name
    # ...then the record is rolled back as if that write had been lost, and the task retried.
    store.client.delete_item(TableName=store.table, Key={"pk": {"S": f"JOB#{record.job_id}"}, "sk": {"S": "JOB"}})
    sagemaker_job(store, bucket)

    again = submit_job(record.job_id, store, backend)

    assert again.current_processing_job == name and again.status is JobStatus.SUBMITTED
    names = backend.sagemaker.list_processing_jobs()["ProcessingJobSummaries"]
    assert [n["ProcessingJobName"] for n in names].count(name) == 1
