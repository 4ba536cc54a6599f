import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from support.records import sample_job

from shardflow.aws.job_queries import JobQuery
from shardflow.core.record import FileRecord, FileStatus, JobRecord, JobStatus
from shardflow.errors import IllegalTransition, JobConflict, ShardflowError


def new_record(job_id: str = "demo-000000000001", pipeline: str = "demo") -> JobRecord:
    return sample_job(job_id, pipeline=pipeline, dag_id="shardflow_demo", bucket="jobs-bucket")


FILES = [FileRecord(key=f"part-{i}.parquet", size=100 + i) for i in range(30)]


def test_a_job_is_created_once_with_its_files(store):
    created = store.create_job(new_record(), FILES)
    assert (created.status, created.version, created.files_total) == (JobStatus.PENDING, 1, 30)
    again = store.create_job(new_record(), FILES)  # a retried prepare finds the same job
    assert again == store.get_job(created.job_id) == created
    files = store.list_files(created.job_id)
    assert [f.key for f in files] == sorted(f.key for f in FILES)
    assert {f.status for f in files} == {FileStatus.PENDING}


def test_a_prepare_run_again_keeps_what_the_files_already_did(store):
    created = store.create_job(new_record(), FILES)
    done = replace(FILES[0], status=FileStatus.SUCCEEDED, rows=12, output_key=FILES[0].key)
    store.record_file_results(created.job_id, [done])

    store.create_job(new_record(), FILES)  # a cleared prepare task runs again

    (kept,) = [f for f in store.list_files(created.job_id) if f.key == done.key]
    assert (kept.status, kept.rows) == (FileStatus.SUCCEEDED, 12)


def test_the_legal_path_and_its_version_numbers(store):
    record = store.create_job(new_record(), FILES)
    record = store.transition(record, JobStatus.SUBMITTED, attempt=1, processing_jobs=["demo-a1"])
    record = store.transition(record, JobStatus.RUNNING)
    record = store.transition(record, JobStatus.FAILED, error="part-3.parquet: unreadable")
    record = store.transition(
        record, JobStatus.SUBMITTED, attempt=2, processing_jobs=["demo-a1", "demo-a2"], error=None
    )
    record = store.transition(record, JobStatus.RUNNING)
    record = store.transition(record, JobStatus.SUCCEEDED, rows=10, files_succeeded=30)
    stored = store.get_job(record.job_id)
    assert stored == record
    assert (stored.status, stored.version, stored.attempt, stored.error) == (JobStatus.SUCCEEDED, 7, 2, None)
    assert stored.processing_jobs == ["demo-a1", "demo-a2"]
    assert stored.finished_at is not None
    one, two = stored.attempts
    assert [(a.number, a.processing_job, a.status) for a in stored.attempts] == [
        (1, "demo-a1", JobStatus.FAILED),
        (2, "demo-a2", JobStatus.SUCCEEDED),
    ]
    assert one.reason == "part-3.parquet: unreadable" and two.ended_at == stored.finished_at
    assert None not in (one.started_at, one.ended_at, two.started_at)


@pytest.mark.parametrize(
    ("path", "illegal"),
    [
        ([], JobStatus.RUNNING),
        ([], JobStatus.SUCCEEDED),
        ([JobStatus.SUBMITTED, JobStatus.RUNNING, JobStatus.SUCCEEDED], JobStatus.FAILED),
        ([JobStatus.CANCELLED], JobStatus.SUBMITTED),
    ],
)
def test_an_illegal_transition_is_refused_and_nothing_is_written(store, path, illegal):
    record = store.create_job(new_record(), FILES)
    for status in path:
        record = store.transition(record, status)
    with pytest.raises(IllegalTransition, match=f"{record.status} -> {illegal} is not allowed"):
        store.transition(record, illegal)
    assert store.get_job(record.job_id) == record


def test_a_stale_writer_gets_a_conflict_not_an_overwrite(store):
    record = store.create_job(new_record(), FILES)
    store.transition(record, JobStatus.SUBMITTED, attempt=1)
    with pytest.raises(JobConflict, match="changed since it was read at version 1"):
        store.transition(record, JobStatus.CANCELLED)
    assert store.get_job(record.job_id).status is JobStatus.SUBMITTED


def test_two_writers_racing_on_one_transition_exactly_one_wins(store):
    record = store.create_job(new_record(), FILES)
    start = threading.Barrier(8)
    outcomes: list[str] = []

    def writer(n: int) -> None:
        start.wait()
        try:
            store.transition(record, JobStatus.SUBMITTED, attempt=1, processing_jobs=[f"writer-{n}"])
            outcomes.append(f"won-{n}")
        except JobConflict:
            outcomes.append("conflict")

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [o for o in outcomes if o.startswith("won")]
    assert len(winners) == 1 and outcomes.count("conflict") == 7
    stored = store.get_job(record.job_id)
    assert stored.version == 2 and stored.processing_jobs == [f"writer-{winners[0][4:]}"]


def test_file_results_are_stored_in_batches(store):
    record = store.create_job(new_record(), FILES)
    results = [
        FileRecord(key=f.key, size=f.size, status=FileStatus.SUCCEEDED, rows=7, output_key=f.key, seconds=0.25)
        for f in FILES[:27]
    ] + [FileRecord(key=FILES[27].key, size=1, status=FileStatus.FAILED, error="ArrowInvalid: not parquet")]
    store.record_file_results(record.job_id, results)
    files = {f.key: f for f in store.list_files(record.job_id)}
    assert sum(f.status is FileStatus.SUCCEEDED for f in files.values()) == 27
    assert files[FILES[27].key].error == "ArrowInvalid: not parquet"
    assert files[FILES[28].key].status is FileStatus.PENDING
    assert files[FILES[0].key].seconds == 0.25
    # A result's write time is when its file finished: the job page's throughput chart reads it.
    assert files[FILES[0].key].finished_at is not None and files[FILES[28].key].finished_at is None


def test_jobs_are_listed_by_pipeline_newest_first_and_by_status(store):
    older = store.create_job(new_record("demo-1"), FILES[:1])
    newer = store.create_job(new_record("demo-2"), FILES[:1])
    store.create_job(new_record("other-1", pipeline="other"), FILES[:1])
    assert [r.job_id for r in store.list_jobs(pipeline="demo")] == [newer.job_id, older.job_id]
    store.transition(older, JobStatus.SUBMITTED)
    assert [r.job_id for r in store.list_jobs(status=JobStatus.SUBMITTED)] == [older.job_id]
    assert {r.job_id for r in store.list_jobs(status=JobStatus.PENDING)} == {"demo-2", "other-1"}


def test_every_job_pages_newest_first_one_query_per_page(store):
    ids = [store.create_job(new_record(f"page-{n}", pipeline=f"p{n % 2}"), FILES[:1]).job_id for n in range(5)]
    queries: list[str] = []

    def count(params, **_):
        queries.append(params.get("IndexName", "(table)"))

    store.client.meta.events.register("before-parameter-build.dynamodb.Query", count)

    first = store.query_jobs(JobQuery(limit=2))
    second = store.query_jobs(JobQuery(limit=2, cursor=first.cursor))
    third = store.query_jobs(JobQuery(limit=2, cursor=second.cursor))

    assert [j.job_id for j in first.jobs + second.jobs + third.jobs] == ids[::-1]
    assert queries == ["by_created", "by_created", "by_created"]
    store.client.meta.events.unregister("before-parameter-build.dynamodb.Query", count)
    assert store.query_jobs(JobQuery(pipeline="p0", limit=10)).jobs[0].job_id == ids[4]
    stopped = store.transition(store.get_job(ids[2]), JobStatus.CANCELLED, stopped_by="admin")
    assert [j.job_id for j in store.query_jobs(JobQuery(pipeline="p0", status=JobStatus.CANCELLED)).jobs] == [ids[2]]
    assert store.get_job(ids[2]).stopped_by == stopped.stopped_by == "admin"
    today = datetime.now(UTC).date()
    assert len(store.query_jobs(JobQuery(since=today, until=today)).jobs) == 5
    assert store.query_jobs(JobQuery(until=today - timedelta(days=1))).jobs == []
    with pytest.raises(ShardflowError, match="cursor"):
        store.query_jobs(JobQuery(cursor="not-a-cursor"))


def test_heartbeats_count_progress_for_the_current_attempt_only(store):
    record = store.create_job(new_record(), FILES)
    record = store.transition(record, JobStatus.SUBMITTED, attempt=1, attempt_files=30, progress_files=0)
    assert store.heartbeat(record.job_id, attempt=1, files=4, rows=400)
    assert store.heartbeat(record.job_id, attempt=1, files=2, rows=150)
    live = store.get_job(record.job_id)
    assert (live.progress_files, live.progress_rows, live.version) == (6, 550, record.version)
    assert live.heartbeat_at is not None

    record = store.transition(live, JobStatus.FAILED)
    record = store.transition(
        record, JobStatus.SUBMITTED, attempt=2, attempt_files=24, progress_files=0, progress_rows=0, heartbeat_at=None
    )
    assert not store.heartbeat(record.job_id, attempt=1, files=9, rows=900)  # the old attempt, still talking
    current = store.get_job(record.job_id)
    assert (current.progress_files, current.progress_rows, current.heartbeat_at) == (0, 0, None)
