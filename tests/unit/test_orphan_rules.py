"""The orphan decision (core/orphans.py) over the in-memory ports: an active job silent past its
heartbeat timeout with no processing job running is settled; a running or recent one is not."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from support.fakes import FakeBackend, InMemoryJobStore, InMemoryObjectStore
from support.records import sample_job

from shardflow.core.lifecycle import submit_job
from shardflow.core.orphans import ORPHAN_SETTLER, is_orphan_candidate, settle_orphan, settle_orphans
from shardflow.core.ports import ProcessingState
from shardflow.core.record import FileRecord, FileStatus, JobStatus

KEYS = ("a.parquet", "b.parquet")


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 3, 9, 12, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def running_job(job_id: str, store: InMemoryJobStore, backend: FakeBackend) -> str:
    """A job submitted through the lifecycle, RUNNING, that has beaten once; its processing job's name."""
    store.create_job(sample_job(job_id, heartbeat_timeout_seconds=60), [FileRecord(k, 1) for k in KEYS])
    record = submit_job(job_id, store, backend)
    store.transition(record, JobStatus.RUNNING)
    assert store.heartbeat(job_id, 1)
    assert record.current_processing_job is not None
    return record.current_processing_job


def setup():
    clock = Clock()
    return clock, InMemoryJobStore(clock=clock), FakeBackend(), InMemoryObjectStore()


def test_an_orphan_is_settled_only_after_its_heartbeat_timeout_and_once_its_processing_job_ended():
    clock, store, backend, objects = setup()
    name = running_job("orphan-1", store, backend)
    backend.set_state(name, ProcessingState.FAILED, "its owner, process 4242, ended without stopping it")

    clock.now += timedelta(seconds=59)
    assert not is_orphan_candidate(store.get_job("orphan-1"), clock.now)
    assert settle_orphan("orphan-1", store, backend, objects, clock.now).status is JobStatus.RUNNING

    clock.now += timedelta(seconds=2)
    settled = settle_orphan("orphan-1", store, backend, objects, clock.now)
    assert settled.status is JobStatus.FAILED
    assert "its owner, process 4242, ended" in (settled.error or "")
    assert backend.stopped == []


def test_an_orphan_whose_processing_job_still_beats_is_left_running_and_a_silent_one_is_stopped():
    clock, store, backend, objects = setup()
    name = running_job("orphan-2", store, backend)
    clock.now += timedelta(seconds=50)
    assert store.heartbeat("orphan-2", 1)  # still beating: its owner may be waiting for it
    clock.now += timedelta(seconds=50)
    assert settle_orphan("orphan-2", store, backend, objects, clock.now).status is JobStatus.RUNNING

    clock.now += timedelta(seconds=61)
    settled = settle_orphan("orphan-2", store, backend, objects, clock.now)
    assert settled.status is JobStatus.FAILED and backend.stopped == [name]


def test_an_orphan_whose_processing_job_was_stopped_is_cancelled_with_its_counts():
    clock, store, backend, objects = setup()
    name = running_job("orphan-3", store, backend)
    store.record_file_results("orphan-3", [FileRecord("a.parquet", 1, FileStatus.SUCCEEDED, rows=5)], attempt=1)
    backend.set_state(name, ProcessingState.STOPPED, "stopped on request")
    clock.now += timedelta(seconds=61)

    settled = settle_orphan("orphan-3", store, backend, objects, clock.now)

    assert (settled.status, settled.stopped_by, settled.files_succeeded, settled.rows) == (
        JobStatus.CANCELLED,
        ORPHAN_SETTLER,
        1,
        5,
    )
    assert f"processing job {name} was stopped (stopped on request)" in (settled.error or "")
    # Its attempt is over: a late result of that attempt is refused by the fence.
    assert not store.record_file_results("orphan-3", [FileRecord("b.parquet", 1, FileStatus.SUCCEEDED)], attempt=1)


def test_a_listing_gets_its_orphans_settled_in_place_and_asks_the_backend_only_about_them():
    clock, store, backend, objects = setup()
    orphan = running_job("orphan-4", store, backend)
    running_job("live-5", store, backend)
    backend.set_state(orphan, ProcessingState.FAILED, "the local runner process died without a result")
    clock.now += timedelta(seconds=61)
    assert store.heartbeat("live-5", 1)
    asked = []

    def backend_for(name: str) -> FakeBackend:
        asked.append(name)
        return backend

    page = [store.get_job("live-5"), store.get_job("orphan-4")]
    settled = settle_orphans(page, store, backend_for, objects, clock.now)

    assert [(r.job_id, r.status) for r in settled] == [("live-5", JobStatus.RUNNING), ("orphan-4", JobStatus.FAILED)]
    assert asked == ["local"]
