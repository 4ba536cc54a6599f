"""Fenced writers against a real moto server: an attempt writes file results and heartbeats only
while it is the job's current, active attempt (one TransactWriteItems per 99 files, with a
ConditionCheck on the job item)."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, replace

import boto3
from support.records import sample_job

from shardflow.aws.jobstore import JobStore
from shardflow.core.record import ErrorKind, FileRecord, FileStatus, JobStatus
from shardflow.processing.reporting import JobReporter

FILES = [FileRecord(key=f"part-{i:03d}.parquet", size=100 + i) for i in range(150)]


@dataclass(frozen=True)
class Outcome:
    relative: str
    size: int
    output: str | None
    rows: int
    seconds: float
    error: str | None = None
    error_kind: ErrorKind | None = None


def count_calls(store, operation: str) -> list[int]:
    calls: list[int] = []
    store.client.meta.events.register(f"before-call.dynamodb.{operation}", lambda **kw: calls.append(1))
    return calls


def resubmit(store, record, attempt: int):
    failed = store.transition(record, JobStatus.FAILED, error="attempt lost its instance")
    return store.transition(
        failed, JobStatus.SUBMITTED, attempt=attempt, processing_jobs=[*record.processing_jobs, f"demo-a{attempt}"]
    )


def test_two_attempts_racing_on_file_results_the_stale_ones_writes_are_refused(store, caplog):
    record = store.create_job(sample_job(), FILES)
    record = store.transition(record, JobStatus.SUBMITTED, attempt=1, processing_jobs=["demo-a1"])
    record = store.transition(record, JobStatus.RUNNING)
    stale = [replace(f, status=FileStatus.FAILED, error="killed", processing_job="demo-a1") for f in FILES]
    fresh = [replace(f, status=FileStatus.SUCCEEDED, rows=7, output_key=f.key, processing_job="demo-a2") for f in FILES]

    # Attempt 1's writer keeps writing while the job moves on to attempt 2, which records its own
    # results: whatever the interleaving, once attempt 2 is current nothing of attempt 1 lands.
    moved = threading.Event()
    refused_after_move = []
    stale_store = JobStore(boto3.client("dynamodb"), store.table)  # attempt 1's own process

    def stale_writer() -> None:
        while len(refused_after_move) < 3:
            was_moved = moved.is_set()
            accepted = stale_store.record_file_results(record.job_id, stale[:40], attempt=1)
            if was_moved:
                assert not accepted
                refused_after_move.append(1)

    writer = threading.Thread(target=stale_writer)
    writer.start()
    record = resubmit(store, record, 2)
    moved.set()
    transactions = count_calls(store, "TransactWriteItems")
    with caplog.at_level(logging.WARNING, logger="shardflow.aws.jobstore"):
        assert store.record_file_results(record.job_id, fresh, attempt=2)
        writer.join(timeout=30)
        assert not writer.is_alive()
        assert not stale_store.record_file_results(record.job_id, stale, attempt=1)

    assert len(transactions) == 2  # 150 files: 99 + 51, each with the fence's ConditionCheck
    files = store.list_files(record.job_id)
    assert {(f.status, f.processing_job) for f in files} == {(FileStatus.SUCCEEDED, "demo-a2")}
    assert sum(f.rows for f in files) == 7 * len(FILES)
    assert "no longer at attempt 1" in caplog.text and "refused 150 file result(s)" in caplog.text


def test_a_settled_attempt_is_fenced_too_and_its_reporter_says_so(store, caplog):
    record = store.create_job(sample_job(), FILES[:3])
    record = store.transition(record, JobStatus.SUBMITTED, attempt=1, processing_jobs=["demo-a1"])
    reporter = JobReporter(store, record.job_id, "demo-a1", attempt=1, interval=60)
    reporter.start()
    assert store.get_job(record.job_id).status is JobStatus.RUNNING
    reporter.file_done(Outcome("part-000.parquet", 100, "part-000.parquet", 5, 0.1))
    reporter._flush()
    reporter._beat()
    assert store.list_files(record.job_id)[0].status is FileStatus.SUCCEEDED

    # The job is cancelled while the attempt still runs: its late results and beats are refused.
    store.transition(store.get_job(record.job_id), JobStatus.CANCELLED, stopped_by="test")
    reporter.file_done(Outcome("part-001.parquet", 101, "part-001.parquet", 5, 0.1))
    with caplog.at_level(logging.WARNING):
        reporter.close()

    late = store.list_files(record.job_id)[1]
    assert (late.status, late.processing_job) == (FileStatus.PENDING, None)
    cancelled = store.get_job(record.job_id)
    assert (cancelled.status, cancelled.progress_files) == (JobStatus.CANCELLED, 1)
    assert "has moved past attempt 1: its results for 1 file(s) were refused" in caplog.text
    # A write without an attempt (the prepare step's file list) is not fenced.
    assert store.record_file_results(record.job_id, [FILES[2]])
