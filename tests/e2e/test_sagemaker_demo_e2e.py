"""The demo pipeline with ``backend: sagemaker``, run by `airflow dags test` against a moto server.

moto accepts the processing jobs and calls them Completed at once, without running anything: the
pipeline must not believe it. Each attempt is resubmitted until attempts run out, the task fails
with the files that never reported, and nothing is published.
"""

import json

import boto3
import pytest
import yaml

from shardflow.aws.jobstore import JobStore
from shardflow.core.record import FileStatus, JobStatus
from shardflow.core.s3uri import S3Uri
from shardflow.local.demo import JOB_TABLE, REPO, run_demo_pipeline
from shardflow.local.demo_data import demo_dataset

IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/shardflow-processing:0.1.0"
ROLE = "arn:aws:iam::123456789012:role/shardflow-dev-processing"

# The factory's DAGs with short task retries, so a failing task is retried within the test.
DAG_FILE = '''"""Airflow DAGs of the pipelines beside this file, with one quick task retry."""

from datetime import timedelta
from pathlib import Path

from shardflow.airflow.dags import build_pipeline_dags

dags = build_pipeline_dags(Path(__file__).parent / "pipelines").dags
for dag in dags.values():
    for task in dag.tasks:
        task.retries = 1
        task.retry_delay = timedelta(seconds=1)
globals().update(dags)
'''


@pytest.fixture
def sagemaker_demo(tmp_path):
    """The demo spec, moved to the sagemaker backend, in a DAG folder of its own."""
    spec = yaml.safe_load((REPO / "dags" / "pipelines" / "demo.yaml").read_text())
    # A name and outputs of its own: the local demo's test shares the session's moto server.
    spec["name"] = "demo_sagemaker"
    spec["output"]["prefix"] = "s3://shardflow-demo/predictions/demo_sagemaker/dt={{ ds }}/"
    spec["compute"] = {
        "backend": "sagemaker",
        "instance_type": "ml.m5.xlarge",
        "instance_count": 2,
        "max_runtime_seconds": 1800,
        "sagemaker": {"image_uri": IMAGE, "role_arn": ROLE, "volume_size_gb": 20, "tags": {"pipeline": "demo"}},
    }
    spec["retries"] = {"max_attempts": 2, "backoff_seconds": 0}
    dags = tmp_path / "dags"
    (dags / "pipelines").mkdir(parents=True)
    (dags / "pipelines" / "demo_sagemaker.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    (dags / "shardflow_test_pipelines.py").write_text(DAG_FILE)
    return dags


def test_jobs_that_moto_calls_completed_are_not_taken_for_a_success(aws, tmp_path, sagemaker_demo):
    with pytest.raises(RuntimeError, match="airflow dags test shardflow_demo_sagemaker") as raised:
        run_demo_pipeline(tmp_path / "state", aws.endpoint_url, dags_folder=sagemaker_demo, pipeline="demo_sagemaker")
    assert "AirflowFailException" in raised.value.args[0]
    assert "FAILED after 2 of 2 attempt(s)" in raised.value.args[0]

    store = JobStore(boto3.client("dynamodb"), JOB_TABLE)
    (record,) = store.list_jobs(pipeline="demo_sagemaker")
    assert record.backend == "sagemaker"
    assert record.status is JobStatus.FAILED
    assert (record.attempt, record.max_attempts) == (2, 2)
    assert record.processing_jobs == [f"{record.job_id}-a1", f"{record.job_id}-a2"]
    assert any(key in record.error for key in demo_dataset())  # a file that never reported is named
    assert {f.status for f in store.list_files(record.job_id)} == {FileStatus.PENDING}

    sagemaker = boto3.client("sagemaker")
    for attempt, name in enumerate(record.processing_jobs, start=1):
        job = sagemaker.describe_processing_job(ProcessingJobName=name)
        assert job["AppSpecification"]["ImageUri"] == IMAGE
        assert job["RoleArn"] == ROLE
        data, model = job["ProcessingInputs"]
        # The day's prefix holds its _SUCCESS marker beside the inputs (the demo waits for it), so
        # the instances get the inputs from a manifest that lists exactly them, never the marker.
        assert data["S3Input"]["S3DataType"] == "ManifestFile"
        assert data["S3Input"]["S3DataDistributionType"] == "ShardedByS3Key"
        manifest = S3Uri.parse(data["S3Input"]["S3Uri"])
        listed = json.loads(boto3.client("s3").get_object(Bucket=manifest.bucket, Key=manifest.key)["Body"].read())
        assert listed[0] == {"prefix": "s3://shardflow-demo/events/dt=2026-01-01/"}
        assert sorted(listed[1:]) == sorted(demo_dataset())
        assert model["S3Input"]["S3Uri"] == "s3://shardflow-demo/models/demo/model.joblib"
        staging = f"{record.output_prefix}_staging/{record.job_id}/attempt-{attempt}/"  # publish promotes from there
        assert job["ProcessingOutputConfig"]["Outputs"][0]["S3Output"]["S3Uri"] == staging
        tags = sagemaker.list_tags(ResourceArn=job["ProcessingJobArn"])["Tags"]
        assert tags == [{"Key": "pipeline", "Value": "demo"}]

    listed = boto3.client("s3").list_objects_v2(Bucket="shardflow-demo", Prefix="predictions/demo_sagemaker/")
    keys = [o["Key"] for o in listed.get("Contents", [])]
    assert not [k for k in keys if k.endswith(("_SUCCESS", "_manifest.json"))], keys
