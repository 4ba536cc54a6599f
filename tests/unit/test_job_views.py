"""What ``shardflow jobs`` prints, from records alone: the command lines it accepts (the old form
included), the order of a job's files, and JSON that parses."""

import io
import json
from dataclasses import replace

import pytest
from rich.console import Console
from support.records import sample_job

from shardflow.cli.job_views import file_json, files_failed_first, job_detail, job_json, jobs_table
from shardflow.cli.jobs import jobs_argv
from shardflow.core.record import AttemptRecord, ErrorKind, FileRecord, FileStatus, JobStatus

FILES = [
    FileRecord("a.parquet", 10, FileStatus.SUCCEEDED, rows=100, output_key="a.parquet", seconds=1.0),
    FileRecord("b.parquet", 10, FileStatus.FAILED, error="column 'x' is missing", error_kind=ErrorKind.INPUT),
    FileRecord("c.parquet", 10, FileStatus.PENDING),
    FileRecord("d.parquet", 10, FileStatus.FAILED, error="worker killed", error_kind=ErrorKind.TRANSIENT),
]


def render(renderable, width: int = 160) -> str:
    console = Console(width=width, record=True, color_system=None, file=io.StringIO())
    console.print(renderable)
    return console.export_text()


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["jobs"], ["jobs", "list"]),
        (["jobs", "--pipeline", "demo"], ["jobs", "list", "--pipeline", "demo"]),
        (["jobs", "--status", "FAILED", "--limit", "5"], ["jobs", "list", "--status", "FAILED", "--limit", "5"]),
        (["jobs", "show", "demo-1"], ["jobs", "show", "demo-1"]),
        (["jobs", "--help"], ["jobs", "--help"]),
        (["pipelines", "list"], ["pipelines", "list"]),
    ],
)
def test_jobs_without_a_subcommand_lists(argv, expected):
    assert jobs_argv(argv) == expected


def test_files_are_shown_failed_first_then_pending_then_done():
    assert [f.key for f in files_failed_first(FILES)] == ["b.parquet", "d.parquet", "c.parquet", "a.parquet"]


def test_show_prints_the_failed_files_first_with_their_error_kind():
    record = sample_job(
        status=JobStatus.FAILED, attempt=1, processing_jobs=["demo-000000000001-a1"], files_total=4, error="2 failed"
    )
    text = render(job_detail(record, FILES))

    lines = [line.split() for line in text.splitlines() if line.split()[1:2] and line.split()[1].endswith(".parquet")]
    assert [(line[0], line[1]) for line in lines] == [
        ("FAILED", "b.parquet"),
        ("FAILED", "d.parquet"),
        ("PENDING", "c.parquet"),
        ("SUCCEEDED", "a.parquet"),
    ]
    assert "input        column 'x' is missing" in text and "transient    worker killed" in text
    assert render(job_detail(record, FILES, file_limit=2)).count(".parquet  ") == 2
    assert "Files, failed first (2 of 4: --files 0 shows all)" in render(job_detail(record, FILES, file_limit=2))


def test_the_jobs_table_has_a_row_per_job_in_the_order_given():
    records = [sample_job(f"demo-00000000000{n}", status=JobStatus.PENDING, files_total=2) for n in (2, 1)]

    lines = render(jobs_table(records)).splitlines()

    assert lines[0].split()[:4] == ["job", "id", "pipeline", "status"]
    assert [line.split()[0] for line in lines[2:]] == ["demo-000000000002", "demo-000000000001"]


def test_json_holds_the_whole_record_and_its_progress():
    record = sample_job(status=JobStatus.RUNNING, attempt=1, files_total=4, attempt_files=4, progress_files=1)
    record = replace(record, stopped_by=None, processing_jobs=["demo-000000000001-a1"])

    job = json.loads(json.dumps(job_json(record)))
    files = json.loads(json.dumps([file_json(f) for f in FILES]))

    assert job["status"] == "RUNNING" and job["job"]["model"]["sha256"] == "ab" * 32
    assert job["progress"]["files_done"] == 1 and job["progress"]["running"] is True
    assert job["max_attempts"] == 3 and job["processing_jobs"] == ["demo-000000000001-a1"]
    assert [(f["status"], f["error_kind"], f["retryable"]) for f in files] == [
        ("SUCCEEDED", None, False),
        ("FAILED", "input", False),
        ("PENDING", None, True),
        ("FAILED", "transient", True),
    ]


ATTEMPTS = [
    AttemptRecord(
        1,
        "demo-000000000001-a1",
        "sagemaker",
        "ml.c5.2xlarge",
        2,
        4,
        "2026-01-01T00:00:00.000000Z",
        started_at="2026-01-01T00:01:00.000000Z",
        ended_at="2026-01-01T00:05:00.000000Z",
        status=JobStatus.FAILED,
        reason="d.parquet: worker killed",
        files_done=2,
        rows=100,
    ),
    AttemptRecord(2, "demo-000000000001-a2", "sagemaker", "ml.c5.2xlarge", 1, 2, "2026-01-01T00:06:00.000000Z"),
]


def test_show_lists_each_attempt_with_its_instances_times_and_reason():
    record = sample_job(status=JobStatus.RUNNING, attempt=2, files_total=4, attempt_files=2)
    record = replace(record, attempts=ATTEMPTS, processing_jobs=[a.processing_job for a in ATTEMPTS])

    text = render(job_detail(record, FILES), width=200)

    first = next(line for line in text.splitlines() if line.split()[:2] == ["1", "demo-000000000001-a1"])
    assert first.split()[2:] == ["2", "x", "ml.c5.2xlarge", "2/4", "100", "00:01:00", "00:05:00", "FAILED"]
    second = next(line for line in text.splitlines() if line.split()[:2] == ["2", "demo-000000000001-a2"])
    assert second.split()[2:] == ["1", "x", "ml.c5.2xlarge", "0/2", "0", "00:06:00", "-", "RUNNING"]
    assert "attempt 1  d.parquet: worker killed" in text  # each reason under the table, whole

    job = json.loads(json.dumps(job_json(record)))
    assert [(a["number"], a["status"], a["instance_count"]) for a in job["attempts"]] == [
        (1, "FAILED", 2),
        (2, None, 1),
    ]
