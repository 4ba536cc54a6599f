"""The in-memory ports keep the rules of the real ones (the job store's are tested against moto in
tests/integration/test_jobs.py), so a lifecycle test that passes on them means something."""

import io
from dataclasses import replace

import pytest
from support.fakes import FakeBackend, InMemoryJobStore, InMemoryObjectStore
from support.records import sample_job, sample_request

from shardflow.core.ports import ProcessingState
from shardflow.core.record import FileRecord, FileStatus, JobStatus
from shardflow.core.s3uri import S3Object, S3Uri
from shardflow.errors import IllegalTransition, JobConflict, JobNotFound, ProcessingJobExists

FILES = [FileRecord(key=f"part-{i}.parquet", size=100 + i) for i in range(3)]


def test_a_job_is_created_once_and_a_second_create_returns_it_unchanged():
    store = InMemoryJobStore()
    created = store.create_job(sample_job(), FILES)
    assert (created.status, created.version, created.files_total) == (JobStatus.PENDING, 1, 3)
    store.record_file_results(created.job_id, [replace(FILES[0], status=FileStatus.SUCCEEDED, rows=5)])
    again = store.create_job(sample_job(), FILES)
    assert again == created == store.get_job(created.job_id)
    assert [f.status for f in store.list_files(created.job_id)] == [FileStatus.SUCCEEDED, *[FileStatus.PENDING] * 2]
    with pytest.raises(JobNotFound, match="no job 'other-1' in table 'shardflow-jobs'"):
        store.get_job("other-1")


def test_a_stale_or_illegal_transition_is_refused_and_nothing_is_written():
    store = InMemoryJobStore()
    record = store.create_job(sample_job(), FILES)
    submitted = store.transition(record, JobStatus.SUBMITTED, attempt=1, processing_jobs=["demo-a1"])
    assert submitted == store.get_job(record.job_id) and submitted.version == 2
    with pytest.raises(JobConflict, match="changed since it was read at version 1"):
        store.transition(record, JobStatus.CANCELLED)
    with pytest.raises(IllegalTransition, match="SUBMITTED -> SUCCEEDED is not allowed"):
        store.transition(submitted, JobStatus.SUCCEEDED)
    with pytest.raises(TypeError, match="not job fields"):
        store.transition(submitted, JobStatus.RUNNING, colour="red")
    assert store.get_job(record.job_id) == submitted
    submitted.processing_jobs.append("not-stored")  # a caller's copy is its own
    assert store.get_job(record.job_id).processing_jobs == ["demo-a1"]


def test_a_heartbeat_counts_for_the_current_attempt_only():
    store = InMemoryJobStore()
    record = store.create_job(sample_job(), FILES)
    record = store.transition(record, JobStatus.SUBMITTED, attempt=2)
    assert store.heartbeat(record.job_id, attempt=2, files=2, rows=70)
    assert not store.heartbeat(record.job_id, attempt=1, files=9, rows=900)
    assert not store.heartbeat("other-1", attempt=2)
    live = store.get_job(record.job_id)
    assert (live.progress_files, live.progress_rows, live.version) == (2, 70, record.version)
    assert live.heartbeat_at is not None


def test_objects_are_listed_in_key_order_and_read_by_inclusive_range():
    objects = InMemoryObjectStore()
    for key in ("in/b.parquet", "in/a/z.parquet", "in-old/a.parquet", "in/a.parquet"):
        objects.put(S3Uri("bucket-1", key), key.encode())
    objects.put(S3Uri("bucket-2", "in/c.parquet"), b"c")
    assert list(objects.list(S3Uri("bucket-1", "in/"))) == [
        S3Object("in/a.parquet", 12),
        S3Object("in/a/z.parquet", 14),
        S3Object("in/b.parquet", 12),
    ]
    uri = S3Uri("bucket-1", "in/a/z.parquet")
    assert objects.read(uri, 3, 5) == b"a/z"
    into = io.BytesIO()
    objects.download(uri, into)
    assert into.getvalue() == objects.read(uri) == b"in/a/z.parquet"
    with pytest.raises(FileNotFoundError, match="s3://bucket-1/in/nothing"):
        objects.read(S3Uri("bucket-1", "in/nothing"))


def test_the_backend_takes_a_name_once_and_stops_only_what_runs():
    backend = FakeBackend()
    request = sample_request(sample_job().job, "demo-000000000001-a1", ("events/part-0.parquet",), instance_count=1)
    backend.submit(request)
    with pytest.raises(ProcessingJobExists):
        backend.submit(request)
    assert backend.requests == [request]
    assert backend.describe("demo-000000000001-a1").state is ProcessingState.IN_PROGRESS
    assert backend.describe("demo-000000000001-a2") is None
    backend.stop("demo-000000000001-a1")
    assert backend.describe("demo-000000000001-a1").state is ProcessingState.STOPPED
    backend.set_state("demo-000000000001-a1", ProcessingState.COMPLETED)
    backend.stop("demo-000000000001-a1")
    assert backend.describe("demo-000000000001-a1").state is ProcessingState.COMPLETED
    assert backend.stopped == ["demo-000000000001-a1"] * 2
