"""The job record's own rules, without a table: the legal status changes and when an attempt has
fallen silent (moved from tests/integration/test_jobs.py: neither needs moto)."""

from dataclasses import replace

import pytest
from support.records import sample_job

from shardflow.core.record import TRANSITIONS, ErrorKind, FileRecord, FileStatus, JobRecord, JobStatus


def new_record(job_id: str = "demo-000000000001", pipeline: str = "demo") -> JobRecord:
    return sample_job(job_id, pipeline=pipeline, dag_id="shardflow_demo", bucket="jobs-bucket")


def test_every_non_terminal_status_can_be_cancelled():
    for status, targets in TRANSITIONS.items():
        if targets and status is not JobStatus.FAILED:
            assert JobStatus.CANCELLED in targets


def test_only_an_attempt_that_has_beaten_can_fall_silent():
    from datetime import UTC, datetime, timedelta

    record = new_record()
    now = datetime.now(UTC)
    stamp = (now - timedelta(seconds=700)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert not record.is_silent(now)  # still starting: no heartbeat yet
    assert replace(record, heartbeat_at=stamp).is_silent(now)
    patient = record.job.model_copy(update={"heartbeat_timeout_seconds": 800})
    assert not replace(record, heartbeat_at=stamp, job=patient).is_silent(now)


@pytest.mark.parametrize(
    ("status", "kind", "retryable"),
    [
        (FileStatus.PENDING, None, True),
        (FileStatus.PENDING, ErrorKind.TRANSIENT, True),
        (FileStatus.FAILED, ErrorKind.TRANSIENT, True),
        (FileStatus.FAILED, None, True),  # recorded before failures were classified
        (FileStatus.FAILED, ErrorKind.INPUT, False),
        (FileStatus.FAILED, ErrorKind.MODEL, False),
        (FileStatus.SUCCEEDED, None, False),
    ],
)
def test_bad_input_classification_decides_what_may_be_resubmitted(status, kind, retryable):
    assert FileRecord("part-0000.parquet", 10, status, error_kind=kind).retryable is retryable
