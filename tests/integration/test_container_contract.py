"""The processing image's contract without Docker: the entrypoint runs on two "instances" laid out
the way SageMaker lays them out (``/opt/ml`` relocated under a temporary root), from the very
request the sagemaker backend sends; then the outputs go through the pipeline's own checks."""

import hashlib
import json
import os
import subprocess
import sys
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path

import boto3
import pyarrow.parquet as pq
from botocore.stub import Stubber
from support.records import sample_job

from shardflow.aws.s3 import S3ObjectStore, iter_objects
from shardflow.compute.sagemaker import SageMakerBackend
from shardflow.compute.sagemaker_request import build_create_request, validate_request
from shardflow.core.lifecycle import settle_job
from shardflow.core.planning import assign_shards
from shardflow.core.ports import ProcessingRequest
from shardflow.core.publish import publish_job
from shardflow.core.record import FileRecord, FileStatus, JobStatus
from shardflow.core.s3uri import S3Uri
from shardflow.local.demo_data import demo_dataset, train_demo_model, upload_dataset

REPO = Path(__file__).resolve().parents[2]
ENTRYPOINT = REPO / "processing_scripts" / "batch_predict.py"  # containers/Dockerfile's ENTRYPOINT
HOSTS = ["algo-1", "algo-2"]
# Loaded at interpreter start through PYTHONPATH: the image has neither Airflow nor moto.
NOT_IN_IMAGE = """
import sys


class NotInImage:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in ("airflow", "moto"):
            raise ModuleNotFoundError(f"{name} is not installed in the processing image")


sys.meta_path.insert(0, NotInImage())
"""
JOB_ID = "churn-4b795638361b"
NAME = f"{JOB_ID}-a1"


def relocate(path: str, root: Path) -> str:
    return str(root / path.removeprefix("/")) if path.startswith("/opt/ml/") else path


def lay_out_instance(s3, create: dict, root: Path, host: str) -> None:
    """What SageMaker does before the container starts: download this host's ShardedByS3Key share
    of the data, a full copy of the model, and write /opt/ml/config."""
    for channel in create["ProcessingInputs"]:
        source = channel["S3Input"]
        assert source["S3DataType"] == "S3Prefix" and source["S3InputMode"] == "File"
        uri = S3Uri.parse(source["S3Uri"])
        keys = [o.key for o in iter_objects(s3, uri)]
        if source["S3DataDistributionType"] == "ShardedByS3Key":
            keys = assign_shards(keys, len(HOSTS))[HOSTS.index(host)]
        base = uri.key if uri.key.endswith("/") else uri.key.rsplit("/", 1)[0] + "/"
        for key in keys:
            target = Path(relocate(source["LocalPath"], root)) / key[len(base) :]
            target.parent.mkdir(parents=True, exist_ok=True)
            s3.download_file(uri.bucket, key, str(target))
    config = root / "opt/ml/config"
    config.mkdir(parents=True)
    arn = f"arn:aws:sagemaker:us-east-1:123456789012:processing-job/{NAME}"
    (config / "processingjobconfig.json").write_text(json.dumps({**create, "ProcessingJobArn": arn}))
    (config / "resourceconfig.json").write_text(
        json.dumps(
            {
                "current_host": host,
                "current_instance_type": "ml.m5.xlarge",
                "current_group_name": "homogeneousCluster",
                "hosts": HOSTS,
                "instance_groups": [
                    {"instance_group_name": "homogeneousCluster", "instance_type": "ml.m5.xlarge", "hosts": HOSTS}
                ],
                "network_interface_name": "eth0",
            }
        )
    )


def test_the_entrypoint_keeps_sagemakers_contract_on_two_instances(aws, s3, bucket, store, tmp_path):
    model = train_demo_model()
    s3.put_object(Bucket=bucket, Key="models/churn/model.joblib", Body=model)
    tables = demo_dataset((2_000, 500, 1_500, 800, 300))
    keys = upload_dataset(s3, f"s3://{bucket}/events/", tables)
    record = store.create_job(
        sample_job(
            JOB_ID,
            bucket,
            model_uri=f"s3://{bucket}/models/churn/model.joblib",
            model_sha256=hashlib.sha256(model).hexdigest(),
            backend="sagemaker",
            instance_count=len(HOSTS),
            max_runtime_seconds=600,
            max_attempts=1,
            sagemaker={
                "image_uri": "123456789012.dkr.ecr.us-east-1.amazonaws.com/shardflow-processing:0.1.0",
                "role_arn": "arn:aws:iam::123456789012:role/shardflow-dev-processing",
            },
        ),
        [FileRecord(key=k, size=1) for k in tables],
    )
    store.transition(record, JobStatus.SUBMITTED, attempt=1, processing_jobs=[NAME])
    request = ProcessingRequest.for_attempt(
        record.job, job_id=JOB_ID, job_table=store.table, attempt=1, job_name=NAME, input_keys=tuple(keys)
    )
    create = build_create_request(request, validate_request(request, "us-east-1"), "us-east-1")

    image_site = tmp_path / "image-site"
    image_site.mkdir()
    (image_site / "sitecustomize.py").write_text(NOT_IN_IMAGE)
    with ExitStack() as stack:
        processes = []
        for host in HOSTS:
            root = tmp_path / host
            lay_out_instance(s3, create, root, host)
            command = [relocate(arg, root) for arg in create["AppSpecification"]["ContainerArguments"]]
            env = {
                "PATH": os.environ["PATH"],
                # The role's credentials, as SageMaker hands them over; here they reach the moto server.
                **{k: v for k, v in os.environ.items() if k.startswith("AWS_") and k != "AWS_DEFAULT_REGION"},
                **create["Environment"],
                "SHARDFLOW_CONFIG_DIR": str(root / "opt/ml/config"),
                "PYTHONPATH": str(image_site),
            }
            log = stack.enter_context(open(root / "container.log", "wb"))
            command = [sys.executable, str(ENTRYPOINT), *command]
            processes.append(subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT))
        for host, process in zip(HOSTS, processes, strict=True):
            assert process.wait(timeout=180) == 0, (tmp_path / host / "container.log").read_text()

    written: dict[str, str] = {}
    for index, host in enumerate(HOSTS):
        output = tmp_path / host / "opt/ml/processing/output"
        manifest = json.loads((output / "_manifests" / f"{NAME}-{host}.json").read_text())
        assert (manifest["processing_job"], manifest["host"]) == (NAME, host)
        shard = sorted(k.removeprefix("events/") for k in assign_shards(sorted(keys), len(HOSTS))[index])
        assert sorted(entry["input"] for entry in manifest["files"]) == shard
        for entry in manifest["files"]:
            assert pq.read_table(output / entry["output"]).num_rows == tables[entry["input"]].num_rows
            written[entry["input"]] = host
    assert sorted(written) == sorted(tables)  # every input predicted once, by one instance

    files = store.list_files(JOB_ID)
    assert {f.status for f in files} == {FileStatus.SUCCEEDED}
    assert {f.processing_job for f in files} == {NAME}

    # EndOfJob upload where the request says (the attempt's staging), then the pipeline's own
    # checks: settle on "Completed", and publish.
    upload_to = S3Uri.parse(create["ProcessingOutputConfig"]["Outputs"][0]["S3Output"]["S3Uri"])
    assert upload_to.key.startswith(f"scores/_staging/{JOB_ID}/")
    for host in HOSTS:
        output = tmp_path / host / "opt/ml/processing/output"
        for path in sorted(p for p in output.rglob("*") if p.is_file()):
            s3.upload_file(str(path), bucket, upload_to.key + path.relative_to(output).as_posix())
    client = boto3.client("sagemaker", region_name="us-east-1")
    backend = SageMakerBackend(sagemaker_client=client, s3_client=s3)
    with Stubber(client) as stub:
        stub.add_response("describe_processing_job", completed(NAME))
        assert settle_job(JOB_ID, store, backend, S3ObjectStore(s3)).status is JobStatus.SUCCEEDED
    summary = publish_job(JOB_ID, store, S3ObjectStore(s3))
    assert summary["rows"] == sum(t.num_rows for t in tables.values())
    s3.head_object(Bucket=bucket, Key="scores/_SUCCESS")


def completed(name: str) -> dict:
    return {
        "ProcessingJobName": name,
        "ProcessingJobArn": f"arn:aws:sagemaker:us-east-1:123456789012:processing-job/{name}",
        "ProcessingJobStatus": "Completed",
        "ProcessingResources": {
            "ClusterConfig": {"InstanceCount": 2, "InstanceType": "ml.m5.xlarge", "VolumeSizeInGB": 30}
        },
        "AppSpecification": {"ImageUri": "123456789012.dkr.ecr.us-east-1.amazonaws.com/shardflow-processing:0.1.0"},
        "CreationTime": datetime(2026, 1, 1, tzinfo=UTC),
    }
