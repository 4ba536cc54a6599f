"""Publish: a job's outputs are marked complete only when its manifests list every input exactly
once, every output is in S3 and the rows add up; otherwise nothing is written."""

import json
from collections.abc import Callable

import pytest

from shardflow.core.lifecycle import advance_job, submit_job
from shardflow.core.ports import ProcessingState
from shardflow.core.publish import publish_job
from shardflow.core.record import JobRecord, JobStatus
from shardflow.core.s3uri import S3Uri
from shardflow.errors import PublishError

OUTPUT = S3Uri("shardflow-unit", "out/")
COMPLETED = ProcessingState.COMPLETED
INPUTS = ["late/part-0001.parquet", "late/part-0003.parquet", "part-0000.parquet", "part-0002.parquet"]


@pytest.fixture
def succeeded(job_store, object_store, backend, prepared, script) -> JobRecord:
    """A job whose first attempt failed one file and whose second predicted it."""
    job = prepared(instance_count=2)
    submit_job(job.job_id, job_store, backend)
    backend.set_state(script.run(job.job_id, fail={"part-0002.parquet": "OSError: connection reset"}), COMPLETED)
    advance_job(job.job_id, job_store, backend, object_store)
    backend.set_state(script.run(job.job_id), COMPLETED)
    record = advance_job(job.job_id, job_store, backend, object_store).record
    assert record.status is JobStatus.SUCCEEDED
    return record


def test_publish_writes_a_manifest_of_every_input_once_and_success(object_store, job_store, succeeded):
    summary = publish_job(succeeded.job_id, job_store, object_store)

    assert (summary["status"], summary["files"], summary["rows"], summary["attempts"]) == ("SUCCEEDED", 4, 1100, 2)
    written = json.loads(object_store.read(OUTPUT.join("_manifest.json")))
    assert (written["job_id"], written["rows"]) == (succeeded.job_id, 1100)
    assert [(f["input"], f["output"]) for f in written["files"]] == [(key, key) for key in INPUTS]
    assert [f["rows"] for f in written["files"]] == [200, 100, 300, 500]
    assert object_store.read(OUTPUT.join("_SUCCESS")) == b""


def test_publish_refuses_a_job_that_has_not_succeeded(object_store, job_store, backend, prepared, script):
    job = prepared()
    submit_job(job.job_id, job_store, backend)
    script.run(job.job_id)  # every output is there, but the processing job has not ended

    with pytest.raises(PublishError, match=f"job {job.job_id} is RUNNING, not SUCCEEDED: nothing to publish"):
        publish_job(job.job_id, job_store, object_store)

    assert not list(object_store.list(OUTPUT.join("_SUCCESS")))


def delete_output(objects, record: JobRecord) -> None:
    objects.delete(OUTPUT.join("late/part-0003.parquet"))


def rewrite(attempt: int, host: int, change: Callable[[dict], None]) -> Callable:
    """A tamper that edits the manifest one instance (``algo-<host>``) of one attempt wrote."""

    def tamper(objects, record: JobRecord) -> None:
        uri = OUTPUT.join(f"_manifests/{record.processing_jobs[attempt - 1]}-algo-{host}.json")
        content = json.loads(objects.read(uri))
        change(content)
        objects.put(uri, json.dumps(content).encode())

    return tamper


def forget_first_entry(content: dict) -> None:
    content["files"].pop(0)


def add_stranger(content: dict) -> None:
    content["files"].append({"input": "other/part-9.parquet", "output": "part-0000.parquet", "rows": 1})


def miscount_rows(content: dict) -> None:
    content["files"][0]["rows"] -= 1


MISMATCH = "outputs under s3://shardflow-unit/out/ do not match its inputs:"


@pytest.mark.parametrize(
    ("tamper", "lines"),
    [
        (delete_output, [MISMATCH, "late/part-0003.parquet (for late/part-0003.parquet) is missing from S3"]),
        (rewrite(1, 1, forget_first_entry), [MISMATCH, "no output for input late/part-0001.parquet"]),
        (
            rewrite(1, 2, add_stranger),
            [
                MISMATCH,
                "output for other/part-9.parquet is not an input of this job",
                "part-0000.parquet is written by more than one input",
            ],
        ),
        (rewrite(2, 1, miscount_rows), ["manifests count 1099 rows but the job record counts 1100"]),
    ],
    ids=["missing-output", "input-without-output", "output-of-another-input", "rows-disagree"],
)
def test_publish_refuses_outputs_that_do_not_match_the_record(object_store, job_store, succeeded, tamper, lines):
    tamper(object_store, succeeded)

    with pytest.raises(PublishError) as refused:
        publish_job(succeeded.job_id, job_store, object_store)

    assert str(refused.value).removeprefix(f"job {succeeded.job_id}: ").splitlines() == lines
    assert not list(object_store.list(OUTPUT.join("_SUCCESS")))
    assert not list(object_store.list(OUTPUT.join("_manifest.json")))


def point_outside(content: dict) -> None:
    content["files"][0]["output"] = "../../../tmp/x/pwned.parquet"


def test_publish_refuses_a_hostile_manifest_entry_that_leads_outside_the_prefix(object_store, job_store, succeeded):
    rewrite(1, 1, point_outside)(object_store, succeeded)

    with pytest.raises(PublishError) as refused:
        publish_job(succeeded.job_id, job_store, object_store)

    lines = str(refused.value).removeprefix(f"job {succeeded.job_id}: ").splitlines()
    assert lines[:2] == [
        MISMATCH,
        "manifest output '../../../tmp/x/pwned.parquet' is refused: "
        "it has a '..' segment, which climbs out of its folder",
    ]
    assert not list(object_store.list(OUTPUT.join("_SUCCESS")))
    assert not [o.key for o in object_store.list(S3Uri("shardflow-unit", "")) if "pwned" in o.key]
