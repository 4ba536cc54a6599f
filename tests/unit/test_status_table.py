"""How a job's progress is counted for every view of it (terminal, demo, Airflow page), and the
demo's plain table: from records alone, no table."""

from dataclasses import replace

from support.records import sample_job

from shardflow.core.record import AttemptRecord, FileRecord, FileStatus, JobStatus
from shardflow.core.status_table import format_duration, format_jobs, job_progress, throughput

STARTED, FINISHED = "2026-01-01T00:00:00.000000Z", "2026-01-01T00:00:10.000000Z"


def test_a_running_first_attempt_counts_what_its_script_reported():
    record = sample_job(
        status=JobStatus.RUNNING, attempt=1, files_total=6, attempt_files=6, progress_files=2, progress_rows=2_000
    )

    progress = job_progress(record)

    assert (progress.files_done, progress.files_total, progress.rows, progress.running) == (2, 6, 2_000, True)
    assert progress.fraction == 2 / 6 and progress.files_text == "2/6"


def test_a_second_attempt_adds_to_what_the_first_finished():
    # Attempt 1 finished 4 of 6 files (40,000 rows); attempt 2 was given the other 2 and has done 1.
    record = sample_job(
        status=JobStatus.SUBMITTED,
        attempt=2,
        files_total=6,
        files_succeeded=4,
        files_failed=2,
        rows=40_000,
        attempt_files=2,
        progress_files=1,
        progress_rows=9_000,
    )

    progress = job_progress(record)

    assert (progress.files_done, progress.rows) == (5, 49_000)
    assert progress.files_text == "5/6"  # the failures of attempt 1 are being retried: not shown as failed


def test_a_settled_job_counts_its_successes_and_its_mean_throughput():
    record = sample_job(
        status=JobStatus.FAILED,
        attempt=1,
        files_total=6,
        files_succeeded=5,
        files_failed=1,
        rows=50_000,
        attempt_files=6,
        progress_files=6,
        progress_rows=50_000,
        started_at=STARTED,
        finished_at=FINISHED,
    )

    progress = job_progress(record)

    assert (progress.files_done, progress.rows, progress.running) == (5, 50_000, False)
    assert progress.files_text == "5/6 (1 failed)"
    assert progress.duration_seconds == 10.0 and progress.rows_per_second == 5_000.0


def test_a_job_that_never_started_has_no_duration_and_no_rate():
    progress = job_progress(sample_job(files_total=3))

    assert progress.duration_seconds is None and progress.rows_per_second is None
    assert progress.fraction == 0.0
    assert job_progress(sample_job(files_total=0)).fraction == 1.0


def test_durations_read_in_the_largest_unit_that_fits():
    assert [format_duration(s) for s in (None, 9.54, 125, 3 * 3600 + 7 * 60 + 5)] == [
        "-",
        "9.5 s",
        "2 min 05 s",
        "3 h 07 min",
    ]


def test_the_demo_table_is_plain_aligned_text():
    record = sample_job(
        "demo-ab94ae0f71b8",
        status=JobStatus.SUCCEEDED,
        attempt=1,
        files_total=6,
        files_succeeded=6,
        rows=66_800,
        started_at=STARTED,
        finished_at=FINISHED,
    )
    running = sample_job(
        "demo-000000000002", status=JobStatus.RUNNING, attempt=1, files_total=6, attempt_files=6, progress_files=3
    )

    assert format_jobs([record, running]).splitlines() == [
        "job id             pipeline  status     attempts  files done/total  rows    duration",
        "-----------------  --------  ---------  --------  ----------------  ------  --------",
        "demo-ab94ae0f71b8  demo      SUCCEEDED  1/3       6/6               66,800  10.0 s",
        "demo-000000000002  demo      RUNNING    1/3       3/6 (running)     0       -",
    ]


def test_throughput_buckets_each_finished_files_rows_by_when_it_finished():
    record = replace(
        sample_job(status=JobStatus.SUCCEEDED, started_at=STARTED, finished_at=FINISHED),
        attempts=[
            AttemptRecord(1, "p-1", "local", "ml.m5.xlarge", 1, 3, STARTED, started_at=STARTED),
            AttemptRecord(2, "p-2", "local", "ml.m5.xlarge", 1, 1, STARTED, started_at="2026-01-01T00:00:06.000000Z"),
        ],
    )
    files = [
        FileRecord("a", 1, FileStatus.SUCCEEDED, rows=1_000, finished_at="2026-01-01T00:00:01.500000Z"),
        FileRecord("b", 1, FileStatus.SUCCEEDED, rows=3_000, finished_at="2026-01-01T00:00:01.900000Z"),
        FileRecord("c", 1, FileStatus.SUCCEEDED, rows=500, finished_at="2026-01-01T00:00:09.000000Z"),
        FileRecord("d", 1, FileStatus.FAILED, rows=0, error="bad", finished_at="2026-01-01T00:00:02.000000Z"),
        FileRecord("e", 1, FileStatus.PENDING),
    ]

    chart = throughput(record, files, buckets=5)

    assert chart is not None and chart.bucket_seconds == 2.0
    assert chart.rates == (2_000.0, 0.0, 0.0, 0.0, 250.0)  # 4,000 rows in 0-2 s, 500 in 8-10 s
    assert sum(rate * chart.bucket_seconds for rate in chart.rates) == 4_500
    assert chart.marks == ((0.0, "attempt 1"), (6.0, "attempt 2")) and chart.peak == 2_000.0


def test_no_throughput_before_a_file_has_succeeded():
    record = sample_job(status=JobStatus.RUNNING, started_at=STARTED, created_at=STARTED)

    assert throughput(record, [FileRecord("a", 1, FileStatus.FAILED, error="bad", finished_at=FINISHED)]) is None
