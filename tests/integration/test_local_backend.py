"""The local backend against a real moto server: SageMaker's contract, as processes."""

import hashlib
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from support.records import sample_job_spec, sample_request

from shardflow.compute import get_backend
from shardflow.compute.local_runner import download_inputs, upload_outputs
from shardflow.core.ports import ProcessingRequest, ProcessingState
from shardflow.core.record import FileRecord, JobRecord, JobStatus
from shardflow.core.s3uri import S3Uri
from shardflow.errors import ProcessingJobExists, UnsafeKey
from shardflow.local.demo_data import demo_dataset, train_demo_model, upload_dataset


def wait_final(backend, name, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = backend.describe(name)
        if status.state.is_final:
            return status
        time.sleep(0.2)
    raise AssertionError(f"{name} still {status.state} after {timeout} s")


@pytest.fixture
def request_for(s3, bucket, store):
    model = train_demo_model()
    s3.put_object(Bucket=bucket, Key="models/m.joblib", Body=model)
    tables = demo_dataset((1_000, 2_000, 300, 1_500, 800))
    keys = upload_dataset(s3, f"s3://{bucket}/in/", tables)

    def build(name: str, instances: int = 2, sha: str = hashlib.sha256(model).hexdigest()) -> ProcessingRequest:
        job = sample_job_spec(
            "local-1",
            bucket,
            model_uri=f"s3://{bucket}/models/m.joblib",
            model_sha256=sha,
            input_prefix=f"s3://{bucket}/in/",
            output_prefix=f"s3://{bucket}/out/{name}/",
            instance_count=instances,
            max_runtime_seconds=300,
        )
        # The job record the script reports to, as the lifecycle leaves it before it submits.
        record = store.create_job(JobRecord(job_id=name, job=job), [FileRecord(key=k, size=1) for k in tables])
        if record.status is JobStatus.PENDING:
            store.transition(record, JobStatus.SUBMITTED, attempt=1, processing_jobs=[name])
        return sample_request(job, name, tuple(keys), job_id=name, job_table=store.table)

    build.tables = tables
    return build


def test_each_instance_gets_its_shard_and_the_outputs_are_uploaded_to_staging(
    tmp_path, s3, bucket, request_for, monkeypatch
):
    monkeypatch.setenv("SHARDFLOW_LOCAL_KEEP_FILES", "1")  # to look at each instance's shard
    backend = get_backend("local", root=str(tmp_path))
    backend.submit(request_for("job-a1", instances=2))
    assert wait_final(backend, "job-a1").state is ProcessingState.COMPLETED
    shards = {
        host: sorted(
            p.relative_to(tmp_path / "job-a1" / host / "opt/ml/processing/input/data").as_posix()
            for p in (tmp_path / "job-a1" / host / "opt/ml/processing/input/data").rglob("*.parquet")
        )
        for host in ("algo-1", "algo-2")
    }
    assert sorted(shards["algo-1"] + shards["algo-2"]) == sorted(request_for.tables)
    assert abs(len(shards["algo-1"]) - len(shards["algo-2"])) <= 1
    staging = "out/job-a1/_staging/job-a1/attempt-1/"
    listed = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="out/job-a1/")["Contents"]}
    manifests = {f"{staging}_manifests/job-a1-algo-1.json", f"{staging}_manifests/job-a1-algo-2.json"}
    assert listed == {f"{staging}{k}" for k in request_for.tables} | manifests  # nothing outside staging
    body = s3.get_object(Bucket=bucket, Key=f"{staging}late/part-0001.parquet")["Body"].read()
    assert pq.read_table(pa.BufferReader(body)).num_rows == 2_000


def test_an_attempts_local_files_are_removed_when_it_ends_its_status_and_logs_kept(tmp_path, request_for):
    backend = get_backend("local", root=str(tmp_path))
    backend.submit(request_for("job-e1", instances=2))
    assert wait_final(backend, "job-e1").state is ProcessingState.COMPLETED
    job_dir = tmp_path / "job-e1"
    # The runner writes its status, then clears: give it the moment between the two.
    deadline = time.monotonic() + 10
    while (job_dir / "model").exists() and time.monotonic() < deadline:
        time.sleep(0.1)

    left = sorted(p.relative_to(job_dir).as_posix() for p in job_dir.rglob("*") if p.is_file())
    assert [p for p in left if p.endswith((".parquet", ".joblib", ".json")) and p != "request.json"] == ["status.json"]
    assert {"algo-1/script.log", "algo-2/script.log", "runner.log", "request.json"} <= set(left)


def test_a_name_is_used_once(tmp_path, request_for):
    backend = get_backend("local", root=str(tmp_path))
    backend.submit(request_for("job-b1", instances=1))
    with pytest.raises(ProcessingJobExists):
        backend.submit(request_for("job-b1", instances=1))
    wait_final(backend, "job-b1")


def test_a_failing_instance_fails_the_job_with_its_reason_and_uploads_nothing(tmp_path, s3, bucket, request_for):
    backend = get_backend("local", root=str(tmp_path))
    backend.submit(request_for("job-c1", sha="0" * 64))
    status = wait_final(backend, "job-c1")
    assert status.state is ProcessingState.FAILED
    assert "exited with code 2" in status.failure_reason and "the spec expects 0000" in status.failure_reason
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket, Prefix="out/job-c1/")


def test_stop_ends_a_running_job(tmp_path, request_for):
    backend = get_backend("local", root=str(tmp_path))
    backend.submit(request_for("job-d1"))
    backend.stop("job-d1")
    assert wait_final(backend, "job-d1").state is ProcessingState.STOPPED


def test_an_unknown_job_is_none(tmp_path):
    assert get_backend("local", root=str(tmp_path)).describe("nope") is None


class RecordingS3:
    """An S3 client that writes a small file wherever it is asked to download, and records uploads."""

    def __init__(self) -> None:
        self.uploads: list[str] = []

    def download_file(self, bucket: str, key: str, path: str) -> None:
        Path(path).write_bytes(b"PAR1")

    def upload_file(self, path: str, bucket: str, key: str) -> None:
        self.uploads.append(key)


@pytest.mark.parametrize(
    "relative",
    ["../" * 20 + "{outside}/pwned.parquet", "/{outside}/pwned.parquet", "a/../../../outside/pwned.parquet"],
)
def test_hostile_keys_in_a_request_are_never_downloaded_by_the_runner(tmp_path, relative):
    root, outside = tmp_path / "local", tmp_path / "outside"
    into = root / "job-h1" / "algo-1" / "opt/ml/processing/input/data"
    into.mkdir(parents=True)
    outside.mkdir()
    hostile = "in/" + relative.format(outside=outside.as_posix().lstrip("/"))
    s3 = RecordingS3()

    with pytest.raises(UnsafeKey, match="is refused"):
        download_inputs(s3, S3Uri("bucket", "in/"), ["in/part-0000.parquet", hostile], into)

    assert list(outside.iterdir()) == []
    assert list(into.iterdir()) == []  # checked before anything is written, the good key included


def test_hostile_links_and_names_in_an_instances_output_are_never_uploaded(tmp_path):
    output, secret = tmp_path / "output", tmp_path / "outside" / "secret.txt"
    secret.parent.mkdir()
    secret.write_text("not for S3")
    (output / "late").mkdir(parents=True)
    (output / "late" / "part-0001.parquet").write_bytes(b"PAR1")
    (output / "link.parquet").symlink_to(secret)
    (output / "folder-link").symlink_to(secret.parent, target_is_directory=True)
    (output / "bad\\name.parquet").write_bytes(b"PAR1")
    s3 = RecordingS3()

    assert upload_outputs(s3, [output], S3Uri("bucket", "out/")) == 1

    assert s3.uploads == ["out/late/part-0001.parquet"]
