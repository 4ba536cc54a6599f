"""The sagemaker backend: the request it sends (read back from a real moto server), and how it reads
SageMaker's answers (state mapping, throttling) through botocore's Stubber."""

import json
import uuid
from dataclasses import replace
from datetime import UTC, datetime

import boto3
import pytest
from botocore.stub import Stubber
from support.records import IMAGE, ROLE, sample_job, sample_job_spec, sample_request, unchecked_job_spec

from shardflow.aws.s3 import S3ObjectStore
from shardflow.compute import get_backend
from shardflow.compute.sagemaker import Backoff, SageMakerBackend
from shardflow.compute.sagemaker_request import InvalidProcessingRequest
from shardflow.core.job import JobSpec
from shardflow.core.lifecycle import settle_job
from shardflow.core.ports import ProcessingRequest, ProcessingState
from shardflow.core.record import FileRecord, FileStatus, JobStatus
from shardflow.errors import ProcessingJobExists
from shardflow.local.demo_data import demo_dataset, upload_dataset

SETTINGS = {
    "image_uri": IMAGE,
    "role_arn": ROLE,
    "volume_size_gb": 50,
    "volume_kms_key_id": "alias/shardflow-volumes",
    "subnets": ["subnet-0123456789abcdef0", "subnet-0fedcba9876543210"],
    "security_group_ids": ["sg-0123456789abcdef0"],
    "tags": {"team": "data-science", "cost-center": "ml:batch"},
    "environment": {"SHARDFLOW_HEARTBEAT_SECONDS": "30"},
}


def sent_bodies(client, operation: str) -> list[dict]:
    """What the client puts on the wire for ``operation``: moto keeps only part of a processing
    job (not its resources or environment), so those are read from the request itself."""
    bodies: list[dict] = []
    client.meta.events.register(
        f"before-send.sagemaker.{operation}", lambda request, **_: bodies.append(json.loads(request.body))
    )
    return bodies


def with_instances(job: JobSpec, count: int) -> JobSpec:
    return job.model_copy(update={"compute": job.compute.model_copy(update={"instance_count": count})})


@pytest.fixture
def job_request(s3, bucket) -> ProcessingRequest:
    keys = upload_dataset(s3, f"s3://{bucket}/events/dt=2026-01-01/", demo_dataset((40, 30, 20, 10)))
    s3.put_object(Bucket=bucket, Key="models/churn/model.joblib", Body=b"not loaded by this test")
    # One moto server serves the whole session, and a processing job name is taken for good.
    job_id = f"churn-{uuid.uuid4().hex[:12]}"
    job = sample_job_spec(
        job_id,
        bucket,
        backend="sagemaker",
        input_prefix=f"s3://{bucket}/events/dt=2026-01-01/",
        model_uri=f"s3://{bucket}/models/churn/model.joblib",
        output_prefix=f"s3://{bucket}/scores/dt=2026-01-01/",
        output_format="csv",
        instance_type="ml.c5.2xlarge",
        instance_count=3,
        max_runtime_seconds=7200,
        features=("f0", "f1", "f2"),
        sagemaker=SETTINGS,
    )
    return sample_request(job, f"{job_id}-a1", tuple(keys))


def test_the_job_created_on_the_server_is_the_one_the_spec_asks_for(aws, job_request):
    backend = SageMakerBackend(region_name="us-east-1")
    sent = sent_bodies(backend.sagemaker, "CreateProcessingJob")
    backend.submit(job_request)

    job = backend.sagemaker.describe_processing_job(ProcessingJobName=job_request.job_name)
    data, model = job["ProcessingInputs"]
    assert data["S3Input"] == {
        "S3Uri": job_request.job.input.prefix,
        "S3DataType": "S3Prefix",  # the prefix holds exactly the four inputs
        "LocalPath": "/opt/ml/processing/input/data",
        "S3InputMode": "File",
        "S3DataDistributionType": "ShardedByS3Key",
        "S3CompressionType": "None",
    }
    assert model["S3Input"]["S3Uri"] == job_request.job.model.uri
    assert model["S3Input"]["S3DataDistributionType"] == "FullyReplicated"
    assert model["S3Input"]["LocalPath"] == "/opt/ml/processing/input/model"
    (output,) = job["ProcessingOutputConfig"]["Outputs"]
    assert output["S3Output"] == {  # the attempt's staging: only publish writes the output prefix itself
        "S3Uri": f"{job_request.job.output.prefix}_staging/{job_request.job_id}/attempt-{job_request.attempt}/",
        "LocalPath": "/opt/ml/processing/output",
        "S3UploadMode": "EndOfJob",
    }
    assert job["AppSpecification"] == {
        "ImageUri": IMAGE,
        "ContainerArguments": [
            "--input-dir",
            "/opt/ml/processing/input/data",
            "--output-dir",
            "/opt/ml/processing/output",
            "--model-path",
            "/opt/ml/processing/input/model/model.joblib",
            "--model-sha256",
            "ab" * 32,
            "--model-uri",  # lineage: the instances' manifests and Parquet outputs name the model
            job_request.job.model.uri,
            "--input-format",
            "parquet",
            "--output-format",
            "csv",
            "--features",
            "f0,f1,f2",
        ],
    }
    assert job["RoleArn"] == ROLE
    assert job["StoppingCondition"] == {"MaxRuntimeInSeconds": 7200}
    assert job["NetworkConfig"] == {
        "EnableNetworkIsolation": False,
        "VpcConfig": {"Subnets": SETTINGS["subnets"], "SecurityGroupIds": SETTINGS["security_group_ids"]},
    }
    tags = backend.sagemaker.list_tags(ResourceArn=job["ProcessingJobArn"])["Tags"]
    assert {t["Key"]: t["Value"] for t in tags} == SETTINGS["tags"]

    (body,) = sent
    assert body["ProcessingResources"] == {
        "ClusterConfig": {
            "InstanceCount": 3,
            "InstanceType": "ml.c5.2xlarge",
            "VolumeSizeInGB": 50,
            "VolumeKmsKeyId": "alias/shardflow-volumes",
        }
    }
    assert body["Environment"] == {
        "AWS_DEFAULT_REGION": "us-east-1",
        "SHARDFLOW_HEARTBEAT_SECONDS": "30",
        "SHARDFLOW_JOB_ID": job_request.job_id,
        "SHARDFLOW_JOB_TABLE": "shardflow-jobs",
        "SHARDFLOW_ATTEMPT": "1",
    }
    assert backend.describe(job_request.job_name).state is ProcessingState.COMPLETED


def test_a_dynamic_job_is_created_without_a_data_input_and_its_instances_claim_units(aws, s3, bucket, job_request):
    # A marker beside the inputs would need a manifest if sharded: a dynamic job reads no prefix.
    s3.put_object(Bucket=bucket, Key="events/dt=2026-01-01/_SUCCESS", Body=b"")
    dynamic = job_request.job.model_copy(
        update={"compute": job_request.job.compute.model_copy(update={"distribution": "dynamic", "instance_count": 6})}
    )
    request = ProcessingRequest.for_attempt(
        dynamic,
        job_id=job_request.job_id,
        job_table="shardflow-jobs",
        attempt=2,
        job_name=job_request.job_name.replace("-a1", "-a2"),
        input_keys=job_request.input_keys,
        units=5,  # more units than objects: a split object's row groups
    )
    assert request.dynamic and request.instance_count == 5
    backend = SageMakerBackend(region_name="us-east-1")
    sent = sent_bodies(backend.sagemaker, "CreateProcessingJob")
    s3_calls: list[str] = []
    backend.s3.meta.events.register("before-send.s3", lambda request, **_: s3_calls.append(request.url))
    backend.submit(request)

    job = backend.sagemaker.describe_processing_job(ProcessingJobName=request.job_name)
    (model,) = job["ProcessingInputs"]  # no "data" input: the instances fetch their units themselves
    assert model["InputName"] == "model" and model["S3Input"]["S3Uri"] == dynamic.model.uri
    arguments = job["AppSpecification"]["ContainerArguments"]
    assert "--claim-units" in arguments
    assert arguments[arguments.index("--input-dir") + 1] == "/opt/ml/processing/input/data"  # the units' folder
    (output,) = job["ProcessingOutputConfig"]["Outputs"]
    assert output["S3Output"]["S3Uri"] == f"{dynamic.output.prefix}_staging/{request.job_id}/attempt-2/"
    assert s3_calls == []  # neither a listing of the prefix nor an input manifest
    assert not s3.list_objects_v2(Bucket=bucket, Prefix=f"scores/dt=2026-01-01/_staging/{request.job_id}/").get(
        "KeyCount"
    )
    # moto keeps neither the cluster nor the environment: read them from the request that was sent.
    (body,) = sent
    assert body["ProcessingResources"]["ClusterConfig"]["InstanceCount"] == 5
    assert body["Environment"] == {
        "AWS_DEFAULT_REGION": "us-east-1",
        "SHARDFLOW_HEARTBEAT_SECONDS": "30",
        "SHARDFLOW_JOB_ID": request.job_id,
        "SHARDFLOW_JOB_TABLE": "shardflow-jobs",
        "SHARDFLOW_ATTEMPT": "2",
    }


def test_a_dynamic_job_with_more_instances_than_units_is_refused_before_anything_is_sent():
    backend, sm_stub, s3_stub, _ = stubbed()
    request = replace(offline_request(distribution="dynamic", instance_count=2), units=1)
    with pytest.raises(InvalidProcessingRequest, match=r"compute.instance_count: 2 instances for 1 work unit"):
        backend.submit(request)
    sm_stub.assert_no_pending_responses()
    s3_stub.assert_no_pending_responses()


def test_a_resubmission_reads_a_manifest_of_just_its_files(aws, s3, bucket, job_request):
    backend = SageMakerBackend(region_name="us-east-1")
    name = job_request.job_name.replace("-a1", "-a2")
    two = with_instances(job_request.job, 2)
    keys = job_request.input_keys[1:3]
    backend.submit(replace(job_request, job=two, job_name=name, input_keys=keys, instance_count=2))

    job = backend.sagemaker.describe_processing_job(ProcessingJobName=name)
    source = job["ProcessingInputs"][0]["S3Input"]
    assert source["S3DataType"] == "ManifestFile"
    assert source["S3DataDistributionType"] == "ShardedByS3Key"
    manifest_key = f"scores/dt=2026-01-01/_staging/{job_request.job_id}/input-manifests/{name}.json"
    assert source["S3Uri"] == f"s3://{bucket}/{manifest_key}"
    manifest = json.loads(s3.get_object(Bucket=bucket, Key=manifest_key)["Body"].read())
    assert manifest == [{"prefix": job_request.job.input.prefix}, "late/part-0001.parquet", "part-0002.parquet"]


def test_an_object_beside_the_inputs_is_kept_out_by_a_manifest(aws, s3, bucket, job_request):
    s3.put_object(Bucket=bucket, Key="events/dt=2026-01-01/_SUCCESS", Body=b"")
    backend = SageMakerBackend(region_name="us-east-1")
    backend.submit(job_request)
    job = backend.sagemaker.describe_processing_job(ProcessingJobName=job_request.job_name)
    assert job["ProcessingInputs"][0]["S3Input"]["S3DataType"] == "ManifestFile"


def test_a_name_already_taken_is_not_submitted_again(aws, job_request):
    backend = SageMakerBackend(region_name="us-east-1")
    backend.submit(job_request)
    sent = sent_bodies(backend.sagemaker, "CreateProcessingJob")
    with pytest.raises(ProcessingJobExists, match=job_request.job_name):
        backend.submit(replace(job_request, job=with_instances(job_request.job, 1), instance_count=1))
    assert sent == []


def test_every_call_goes_to_the_configured_endpoint_only(aws, job_request):
    backend = get_backend("sagemaker", region_name="us-east-1", endpoint_url=aws.endpoint_url)
    urls: list[str] = []
    for client in (backend.sagemaker, backend.s3):
        client.meta.events.register("before-send", lambda request, **_: urls.append(request.url))
    backend.submit(replace(job_request, input_keys=job_request.input_keys[:3]))
    backend.describe(job_request.job_name)
    backend.stop(job_request.job_name)
    assert len(urls) >= 4
    assert all(url.startswith(aws.endpoint_url) for url in urls), urls


def test_config_rebuilds_the_backend_and_holds_no_credentials():
    backend = get_backend("sagemaker", aws_conn_id="aws_prod", region_name="eu-west-1")
    config = backend.config()
    assert config == {"aws_conn_id": "aws_prod", "region_name": "eu-west-1"}
    assert json.loads(json.dumps(config)) == config
    rebuilt = get_backend("sagemaker", **config)
    assert isinstance(rebuilt, SageMakerBackend) and rebuilt.config() == config


# --- requests refused before anything is sent ----------------------------------------------


def stubbed(**backend_options) -> tuple[SageMakerBackend, Stubber, Stubber, list[float]]:
    sagemaker = boto3.client("sagemaker", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    s3 = boto3.client("s3", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    sleeps: list[float] = []
    backend = SageMakerBackend(sagemaker_client=sagemaker, s3_client=s3, sleep=sleeps.append, **backend_options)
    sm_stub, s3_stub = Stubber(sagemaker), Stubber(s3)
    sm_stub.activate()
    s3_stub.activate()
    return backend, sm_stub, s3_stub, sleeps


def offline_request(**changes) -> ProcessingRequest:
    """A request as a record could hold it, nothing checked on the way: the backend checks it."""
    job_name = changes.pop("job_name", "churn-4b795638361b-a1")
    instances = changes.pop("instance_count", 2)
    job = unchecked_job_spec(
        "churn-4b795638361b",
        "data-bucket",
        backend="sagemaker",
        input_prefix=changes.pop("input_prefix", "s3://data-bucket/events/"),
        model_uri=changes.pop("model_uri", "s3://data-bucket/models/model.joblib"),
        instance_count=instances,
        **changes,
    )
    return sample_request(job, job_name, ("events/a.parquet", "events/b.parquet"), instance_count=instances)


@pytest.mark.parametrize(
    ("changes", "field", "words"),
    [
        ({"instance_type": "m5.xlarge"}, "compute.instance_type", "ml.<family>.<size>"),
        ({"instance_count": 0}, "compute.instance_count", "SageMaker allows 1-100"),
        ({"instance_count": 3}, "compute.instance_count", "3 instances for 2 input object(s)"),
        ({"input_prefix": "data-bucket/events/"}, "input.prefix", "s3://"),
        ({"output_prefix": "s3://data-bucket/scores"}, "output.prefix", "must end with '/'"),
        ({"model_uri": "s3://Data_Bucket/m.joblib"}, "model.uri", "not a valid S3 bucket"),
        ({"job_name": "churn_job-a1"}, "job name", "letters, digits and hyphens"),
        ({"job_name": "x" * 64}, "job name", "1-63"),
        ({"sagemaker": None}, "compute.sagemaker", "required"),
        ({"sagemaker": {"image_uri": IMAGE, "role_arn": "shardflow-role"}}, "compute.sagemaker.role_arn", "ARN"),
        (
            {"sagemaker": {"image_uri": IMAGE.replace("us-east-1", "eu-west-1"), "role_arn": ROLE}},
            "compute.sagemaker.image_uri",
            "the image is in eu-west-1 but the job runs in us-east-1",
        ),
        ({"features": tuple(f"feature_{i:03d}" for i in range(30))}, "features/passthrough", "256"),
    ],
)
def test_a_bad_request_is_refused_with_the_field_named_and_nothing_sent(changes, field, words):
    backend, sm_stub, s3_stub, _ = stubbed()
    with pytest.raises(InvalidProcessingRequest) as raised:
        backend.submit(offline_request(**changes))
    line = next(line for line in str(raised.value).splitlines() if line.strip().startswith(f"{field}:"))
    assert words in line
    # Nothing was queued on the stubs: any call at all would have raised a stub error instead.
    sm_stub.assert_no_pending_responses()
    s3_stub.assert_no_pending_responses()


# --- what SageMaker answers ------------------------------------------------------------------


def describe_response(status: str, **extra) -> dict:
    return {
        "ProcessingJobName": "churn-4b795638361b-a1",
        "ProcessingJobArn": "arn:aws:sagemaker:us-east-1:123456789012:processing-job/churn-4b795638361b-a1",
        "ProcessingJobStatus": status,
        "ProcessingResources": {
            "ClusterConfig": {"InstanceCount": 2, "InstanceType": "ml.m5.xlarge", "VolumeSizeInGB": 30}
        },
        "AppSpecification": {"ImageUri": IMAGE},
        "CreationTime": datetime(2026, 1, 1, tzinfo=UTC),
        **extra,
    }


@pytest.mark.parametrize(
    ("status", "extra", "state", "reason"),
    [
        ("InProgress", {}, ProcessingState.IN_PROGRESS, None),
        ("Stopping", {}, ProcessingState.STOPPING, None),
        ("Completed", {}, ProcessingState.COMPLETED, None),
        ("Stopped", {}, ProcessingState.STOPPED, None),
        (
            "Failed",
            {"FailureReason": "ClientError: ImagePull failed", "ExitMessage": "no such tag"},
            ProcessingState.FAILED,
            "ClientError: ImagePull failed; no such tag",
        ),
    ],
)
def test_sagemaker_states_map_to_the_backend_states(status, extra, state, reason):
    backend, sm_stub, _, _ = stubbed()
    sm_stub.add_response(
        "describe_processing_job",
        describe_response(status, **extra),
        {"ProcessingJobName": "churn-4b795638361b-a1"},
    )
    described = backend.describe("churn-4b795638361b-a1")
    assert (described.state, described.failure_reason) == (state, reason)
    assert described.state.is_final == (status in ("Completed", "Failed", "Stopped"))
    sm_stub.assert_no_pending_responses()


def test_an_unknown_job_is_none_and_an_unknown_state_is_an_error():
    backend, sm_stub, _, _ = stubbed()
    sm_stub.add_client_error(
        "describe_processing_job", "ValidationException", "Could not find requested job with name nope"
    )
    assert backend.describe("nope") is None
    sm_stub.add_response("describe_processing_job", describe_response("Pending"))
    with pytest.raises(RuntimeError, match="'Pending', a state Shardflow does not know"):
        backend.describe("churn-4b795638361b-a1")


def test_throttled_calls_back_off_and_then_succeed():
    backend, sm_stub, _, sleeps = stubbed(backoff=Backoff(attempts=5, base_seconds=1.0, cap_seconds=3.0))
    for code in ("ThrottlingException", "ThrottlingException", "TooManyRequestsException"):
        sm_stub.add_client_error("describe_processing_job", code, "Rate exceeded", http_status_code=400)
    sm_stub.add_response("describe_processing_job", describe_response("InProgress"))
    assert backend.describe("churn-4b795638361b-a1").state is ProcessingState.IN_PROGRESS
    assert len(sleeps) == 3
    bounds = [1.0, 2.0, 3.0]  # doubling from 1 s, capped at 3 s
    assert all(0 <= slept <= bound for slept, bound in zip(sleeps, bounds, strict=True)), sleeps
    sm_stub.assert_no_pending_responses()


def test_a_throttled_create_is_sent_again_and_succeeds():
    backend, sm_stub, s3_stub, sleeps = stubbed(backoff=Backoff(base_seconds=0.01))
    request = offline_request()
    sm_stub.add_client_error("describe_processing_job", "ValidationException", "Could not find requested job")
    listing = {"Contents": [{"Key": key, "Size": 10} for key in request.input_keys], "IsTruncated": False}
    s3_stub.add_response("list_objects_v2", listing, {"Bucket": "data-bucket", "Prefix": "events/"})
    sm_stub.add_client_error("create_processing_job", "ThrottlingException", "Rate exceeded")
    arn = {"ProcessingJobArn": "arn:aws:sagemaker:us-east-1:123456789012:processing-job/churn-4b795638361b-a1"}
    sm_stub.add_response("create_processing_job", arn)
    backend.submit(request)
    assert len(sleeps) == 1
    sm_stub.assert_no_pending_responses()
    s3_stub.assert_no_pending_responses()


def test_throttling_that_never_ends_raises_the_last_error():
    backend, sm_stub, _, sleeps = stubbed(backoff=Backoff(attempts=3, base_seconds=0.01))
    sm_stub.add_response("describe_processing_job", describe_response("InProgress"))
    for _ in range(3):
        sm_stub.add_client_error("stop_processing_job", "ThrottlingException", "Rate exceeded")
    with pytest.raises(Exception, match="ThrottlingException"):
        backend.stop("churn-4b795638361b-a1")
    assert len(sleeps) == 2


def test_other_errors_are_not_retried():
    backend, sm_stub, _, sleeps = stubbed()
    sm_stub.add_client_error("describe_processing_job", "AccessDeniedException", "not authorized", 403)
    with pytest.raises(Exception, match="AccessDeniedException"):
        backend.describe("churn-4b795638361b-a1")
    assert sleeps == []


def test_stop_stops_a_running_job_and_leaves_an_ended_one_alone():
    backend, sm_stub, _, _ = stubbed()
    name = {"ProcessingJobName": "churn-4b795638361b-a1"}
    sm_stub.add_response("describe_processing_job", describe_response("InProgress"), name)
    sm_stub.add_response("stop_processing_job", {}, name)
    backend.stop("churn-4b795638361b-a1")
    sm_stub.add_response("describe_processing_job", describe_response("Completed"), name)
    backend.stop("churn-4b795638361b-a1")  # no stop call is queued: one would fail the stub
    sm_stub.assert_no_pending_responses()


def test_a_job_that_ends_while_being_stopped_is_left_as_it_ended():
    backend, sm_stub, _, _ = stubbed()
    sm_stub.add_response("describe_processing_job", describe_response("InProgress"))
    sm_stub.add_client_error("stop_processing_job", "ValidationException", "Job is not in InProgress state")
    sm_stub.add_response("describe_processing_job", describe_response("Completed"))
    backend.stop("churn-4b795638361b-a1")
    sm_stub.assert_no_pending_responses()


@pytest.mark.parametrize(
    ("status", "reported", "expected"),
    [
        ("InProgress", True, JobStatus.SUBMITTED),
        ("Completed", True, JobStatus.SUCCEEDED),
        ("Completed", False, JobStatus.FAILED),  # moto's way: Completed, yet no file was predicted
        ("Failed", True, JobStatus.FAILED),
        ("Stopped", False, JobStatus.FAILED),
    ],
)
def test_the_job_record_follows_what_sagemaker_says(store, s3, bucket, status, reported, expected):
    record = store.create_job(
        sample_job("churn-4b795638361b", bucket, backend="sagemaker", max_attempts=1),
        [FileRecord(key="a.parquet", size=10)],
    )
    store.transition(record, JobStatus.SUBMITTED, attempt=1, processing_jobs=["churn-4b795638361b-a1"])
    if reported:
        done = FileRecord(
            key="a.parquet",
            size=10,
            status=FileStatus.SUCCEEDED,
            rows=5,
            output_key="a.parquet",
            processing_job="churn-4b795638361b-a1",
        )
        store.record_file_results("churn-4b795638361b", [done])
    if status == "Completed" and reported:  # SageMaker's upload at the end of the job, to the attempt's staging
        s3.put_object(Bucket=bucket, Key="scores/_staging/churn-4b795638361b/attempt-1/a.parquet", Body=b"predictions")
    backend, sm_stub, _, _ = stubbed()
    extra = {"FailureReason": "AlgorithmError: instance algo-2 ran out of memory"} if status == "Failed" else {}
    sm_stub.add_response("describe_processing_job", describe_response(status, **extra))

    settled = settle_job("churn-4b795638361b", store, backend, S3ObjectStore(s3))

    assert settled.status is expected
    if status == "Failed":
        assert "AlgorithmError: instance algo-2 ran out of memory" in settled.error
    if expected is JobStatus.FAILED and not reported:
        assert "a.parquet" in settled.error  # the file that never reported is named
