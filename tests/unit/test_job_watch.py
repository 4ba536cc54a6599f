"""``shardflow jobs watch`` over an in-memory job table that moves on at each read: it follows a
job through a failed attempt and its retry, and knows when a job has ended for good."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from rich.console import Console
from support.fakes import InMemoryJobStore
from support.records import sample_job

from shardflow.cli.job_watch import RESUBMIT_GRACE, next_attempt_due, watch_job
from shardflow.core.record import ErrorKind, FileRecord, FileStatus, JobRecord, JobStatus

JOB = "churn-000000000001"
KEYS = ("a.parquet", "b.parquet")


class MovingStore(InMemoryJobStore):
    """The job table, moved on by the next of ``steps`` before each read of the job."""

    def __init__(self, steps: list[Callable[[InMemoryJobStore], object]]) -> None:
        super().__init__()
        self.steps = steps
        self._moving = False

    def get_job(self, job_id: str) -> JobRecord:
        if self.steps and not self._moving:  # a step's own reads do not move the job
            self._moving = True
            try:
                self.steps.pop(0)(self)
            finally:
                self._moving = False
        return super().get_job(job_id)


def submit(store: InMemoryJobStore, attempt: int, files: int) -> None:
    store.transition(
        store.get_job(JOB),
        JobStatus.SUBMITTED,
        attempt=attempt,
        processing_jobs=[f"{JOB}-a{n}" for n in range(1, attempt + 1)],
        attempt_files=files,
        progress_files=0,
        progress_rows=0,
    )


def move(store: InMemoryJobStore, to: JobStatus, **changes) -> None:
    store.transition(store.get_job(JOB), to, **changes)


def fail_b_transiently(store: InMemoryJobStore) -> None:
    store.record_file_results(
        JOB,
        [
            FileRecord("a.parquet", 1, FileStatus.SUCCEEDED, rows=10),
            FileRecord("b.parquet", 1, FileStatus.FAILED, error="worker killed", error_kind=ErrorKind.TRANSIENT),
        ],
    )
    move(store, JobStatus.FAILED, files_succeeded=1, files_failed=1, rows=10, error="b.parquet: worker killed")


def new_store(steps: list[Callable[[InMemoryJobStore], object]], **settings) -> MovingStore:
    store = MovingStore(steps)
    settings.setdefault("backoff_seconds", 0)
    store.create_job(sample_job(JOB, **settings), [FileRecord(k, 1) for k in KEYS])
    return store


def console(terminal: bool = False) -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, force_terminal=terminal, width=120, color_system=None), out


def test_watch_follows_a_retried_job_to_its_success(capsys):
    store = new_store(
        [
            lambda s: None,
            lambda s: submit(s, 1, 2),
            lambda s: move(s, JobStatus.RUNNING, started_at=s._now()),
            lambda s: s.heartbeat(JOB, 1, files=1, rows=10),
            lambda s: s.heartbeat(JOB, 1, files=1),
            fail_b_transiently,
            lambda s: None,  # waiting for the retry: a failed attempt is not the end
            lambda s: submit(s, 2, 1),
            lambda s: move(s, JobStatus.RUNNING),
            lambda s: s.heartbeat(JOB, 2, files=1, rows=20),
            lambda s: move(s, JobStatus.SUCCEEDED, files_succeeded=2, files_failed=0, rows=30),
        ]
    )
    view, out = console()

    code = watch_job(store, JOB, view, interval=0.001)

    lines = capsys.readouterr().out.splitlines()
    assert code == 0 and not store.steps
    assert [line.split(": ")[1].split(",")[0] for line in lines] == [
        "0/2 files",  # PENDING
        "0/2 files",  # SUBMITTED
        "0/2 files",  # RUNNING
        "1/2 files",
        "2/2 files",
        "1/2 (1 failed) files",  # attempt 1 FAILED
        "1/2 files",  # attempt 2 SUBMITTED: a.parquet stays done
        "1/2 files",
        "2/2 files",
        "2/2 files",  # SUCCEEDED
    ]
    assert out.getvalue().startswith(f"{JOB}  SUCCEEDED  2/2 files, 30 rows, ")


def test_watch_redraws_in_a_terminal_and_ends_on_a_failure_for_good():
    store = new_store(
        [lambda s: submit(s, 1, 2), lambda s: move(s, JobStatus.RUNNING, started_at=s._now()), fail_b_transiently],
        max_attempts=1,
    )
    view, out = console(terminal=True)

    assert watch_job(store, JOB, view, interval=0.001) == 1

    text = out.getvalue()
    assert "━" in text and f"{JOB}  FAILED  1/2 (1 failed) files, 10 rows" in text
    assert "b.parquet: worker killed" in text and f"shardflow jobs show {JOB}: every file and its error" in text


def test_a_retry_that_never_comes_ends_the_watch_after_a_grace_period():
    store = new_store([], backoff_seconds=30)
    submit(store, 1, 2)
    fail_b_transiently(store)
    due = next_attempt_due(store.get_job(JOB), store)
    assert due is not None
    view, out = console()
    late = due + RESUBMIT_GRACE + timedelta(seconds=1)

    assert watch_job(store, JOB, view, interval=0.001, now=lambda: late) == 1
    assert f"attempt 2 was due at {due:%H:%M:%S} UTC and has not started" in out.getvalue()


@pytest.mark.parametrize(
    ("settings", "error_kind", "expected"),
    [
        ({}, ErrorKind.TRANSIENT, "due"),
        ({"max_attempts": 1}, ErrorKind.TRANSIENT, None),  # no attempt left
        ({}, ErrorKind.INPUT, None),  # nothing another attempt could fix
    ],
)
def test_a_failed_job_has_a_next_attempt_only_if_one_may_help(settings, error_kind, expected):
    store = new_store([], **settings)
    submit(store, 1, 2)
    store.record_file_results(
        JOB,
        [
            FileRecord("a.parquet", 1, FileStatus.SUCCEEDED, rows=10),
            FileRecord("b.parquet", 1, FileStatus.FAILED, error="x", error_kind=error_kind),
        ],
    )
    move(store, JobStatus.FAILED)
    record = store.get_job(JOB)

    due = next_attempt_due(record, store)

    assert (due is not None) == (expected == "due")
    assert due is None or due <= datetime.now(UTC)  # backoff 0: due at once


def test_json_lines_parse(capsys):
    store = new_store([lambda s: move(s, JobStatus.CANCELLED, stopped_by="cli:ann")])
    view, out = console()

    assert watch_job(store, JOB, view, interval=0.001, as_json=True) == 1

    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(j["status"], j["stopped_by"]) for j in lines] == [("CANCELLED", "cli:ann")]
    assert out.getvalue() == ""
