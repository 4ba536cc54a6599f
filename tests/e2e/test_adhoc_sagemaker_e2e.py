"""The trigger form's ``backend: sagemaker``, run by `airflow dags test shardflow_adhoc --conf` against
a moto server, with the deployment's SageMaker settings in the environment.

The form's values become the same JobSpec as a pipeline's; the sagemaker backend then sends a
checked CreateProcessingJob. moto calls every processing job Completed at once without running it,
so the run must end failed, naming the files that never reported, and publish nothing.
"""

import hashlib
import json

import boto3
import pytest

from shardflow.aws.jobstore import JobStore
from shardflow.core.record import FileStatus, JobStatus
from shardflow.local.demo import JOB_TABLE, REPO, airflow_environment, prepare_airflow, run_airflow
from shardflow.local.demo_data import demo_dataset, ensure_bucket, train_demo_model, upload_dataset

IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/shardflow-processing:0.2.0"
ROLE = "arn:aws:iam::123456789012:role/shardflow-dev-processing"
BUCKET = "shardflow-adhoc"


def test_the_trigger_forms_adhoc_sagemaker_choice_sends_a_checked_processing_job(aws, tmp_path):
    s3 = boto3.client("s3")
    ensure_bucket(s3, BUCKET)
    model = train_demo_model()
    s3.put_object(Bucket=BUCKET, Key="models/demo/model.joblib", Body=model)
    tables = demo_dataset((3_000, 1_000, 2_000))
    upload_dataset(s3, f"s3://{BUCKET}/events/adhoc/", tables)
    store = JobStore(boto3.client("dynamodb"), JOB_TABLE)
    store.create_table()

    state = tmp_path / "state"
    env = {
        **airflow_environment(state, aws.endpoint_url, REPO / "dags"),
        "SHARDFLOW_SAGEMAKER_IMAGE_URI": IMAGE,
        "SHARDFLOW_SAGEMAKER_ROLE_ARN": ROLE,
        "SHARDFLOW_SAGEMAKER_VOLUME_SIZE_GB": "40",
        "SHARDFLOW_POLL_SECONDS": "1",
    }
    log = state / "adhoc.log"
    prepare_airflow(env, log)
    conf = {
        "model_uri": f"s3://{BUCKET}/models/demo/model.joblib",
        "model_sha256": hashlib.sha256(model).hexdigest(),
        "input_prefix": f"s3://{BUCKET}/events/adhoc/",
        "output_prefix": f"s3://{BUCKET}/predictions/adhoc/",
        "backend": "sagemaker",
        "instance_count": 2,
        "max_runtime_seconds": 900,
        "max_attempts": 1,
    }

    with pytest.raises(RuntimeError, match="airflow dags test shardflow_adhoc") as raised:
        run_airflow(["dags", "test", "shardflow_adhoc", "2026-01-01", "--conf", json.dumps(conf)], env, log)
    assert "FAILED after 1 of 1 attempt(s)" in raised.value.args[0]

    (record,) = store.list_jobs(pipeline="adhoc")
    assert (record.backend, record.status, record.processing_jobs) == (
        "sagemaker",
        JobStatus.FAILED,
        [f"{record.job_id}-a1"],
    )
    assert record.job.compute.sagemaker is not None
    assert (record.job.compute.sagemaker.image_uri, record.job.compute.sagemaker.volume_size_gb) == (IMAGE, 40)
    assert {f.status for f in store.list_files(record.job_id)} == {FileStatus.PENDING}

    job = boto3.client("sagemaker").describe_processing_job(ProcessingJobName=record.processing_jobs[0])
    assert job["AppSpecification"]["ImageUri"] == IMAGE
    assert job["RoleArn"] == ROLE
    arguments = job["AppSpecification"]["ContainerArguments"]
    assert arguments[arguments.index("--model-sha256") + 1] == conf["model_sha256"]
    assert arguments[arguments.index("--model-path") + 1] == "/opt/ml/processing/input/model/model.joblib"
    data, model_input = job["ProcessingInputs"]
    assert data["S3Input"]["S3Uri"] == conf["input_prefix"]
    assert data["S3Input"]["S3DataDistributionType"] == "ShardedByS3Key"
    assert model_input["S3Input"]["S3Uri"] == conf["model_uri"]
    staging = f"{conf['output_prefix']}_staging/{record.job_id}/attempt-1/"  # publish promotes from there
    assert job["ProcessingOutputConfig"]["Outputs"][0]["S3Output"]["S3Uri"] == staging
    assert job["StoppingCondition"] == {"MaxRuntimeInSeconds": 900}

    listed = s3.list_objects_v2(Bucket=BUCKET, Prefix="predictions/adhoc/")
    assert not [o["Key"] for o in listed.get("Contents", []) if o["Key"].endswith("_SUCCESS")]
