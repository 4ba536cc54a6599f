"""Publish, the committer: a job's staged outputs are promoted only when its manifests list every
input exactly once, every output is staged with the sha256 its manifest gives, and the rows add
up; then readers see exactly ``_manifest.json``'s objects, whatever any attempt writes later."""

import hashlib
import json
import re
from collections.abc import Callable

import pytest
from support.fakes import InMemoryObjectStore

from shardflow.core.lifecycle import advance_job, submit_job
from shardflow.core.ports import ProcessingState
from shardflow.core.publish import publish_job
from shardflow.core.record import JobRecord, JobStatus
from shardflow.core.s3uri import S3Uri
from shardflow.core.staging import attempt_staging, is_visible, job_staging
from shardflow.errors import ObjectExists, PublishError

OUTPUT = S3Uri("shardflow-unit", "out/")
COMPLETED = ProcessingState.COMPLETED
INPUTS = ["late/part-0001.parquet", "late/part-0003.parquet", "part-0000.parquet", "part-0002.parquet"]


def visible(objects: InMemoryObjectStore, prefix: S3Uri = OUTPUT) -> dict[str, bytes]:
    """What a dataset reader lists under the prefix (names starting with '_' or '.' skipped)."""
    found = {o.key[len(prefix.key) :]: o.key for o in objects.list(prefix)}
    return {rel: objects.read(S3Uri(prefix.bucket, key)) for rel, key in found.items() if is_visible(rel)}


def published_matches_manifest(objects: InMemoryObjectStore, prefix: S3Uri = OUTPUT) -> dict:
    manifest = json.loads(objects.read(prefix.join("_manifest.json")))
    seen = visible(objects, prefix)
    assert sorted(seen) == sorted(f["output"] for f in manifest["files"])
    assert {f["output"]: f["sha256"] for f in manifest["files"]} == {
        k: hashlib.sha256(v).hexdigest() for k, v in seen.items()
    }
    return manifest


@pytest.fixture
def run_job(job_store, object_store, backend, prepared, script) -> Callable[..., JobRecord]:
    """Prepare and run a job to SUCCEEDED: its first attempt fails one file, its second redoes it."""

    def run(**changes) -> JobRecord:
        job = prepared(instance_count=2, **changes)
        submit_job(job.job_id, job_store, backend)
        backend.set_state(script.run(job.job_id, fail={"part-0002.parquet": "OSError: connection reset"}), COMPLETED)
        advance_job(job.job_id, job_store, backend, object_store)
        backend.set_state(script.run(job.job_id), COMPLETED)
        record = advance_job(job.job_id, job_store, backend, object_store).record
        assert record.status is JobStatus.SUCCEEDED
        return record

    return run


@pytest.fixture
def succeeded(run_job) -> JobRecord:
    return run_job()


def test_publish_promotes_each_output_from_the_attempt_that_made_it_then_clears_staging(
    object_store, job_store, succeeded
):
    staged = {
        key: object_store.read(
            attempt_staging(str(OUTPUT), succeeded.job_id, 2 if key == "part-0002.parquet" else 1).join(key)
        )
        for key in INPUTS
    }

    summary = publish_job(succeeded.job_id, job_store, object_store)

    assert (summary["status"], summary["files"], summary["rows"], summary["attempts"]) == ("SUCCEEDED", 4, 1100, 2)
    written = published_matches_manifest(object_store)
    assert (written["job_id"], written["rows"]) == (succeeded.job_id, 1100)
    assert [(f["input"], f["output"]) for f in written["files"]] == [(key, key) for key in INPUTS]
    assert [f["rows"] for f in written["files"]] == [200, 100, 300, 500]
    assert visible(object_store) == staged
    assert object_store.read(OUTPUT.join("_SUCCESS")) == b""
    sources = {t.key.removeprefix("out/"): s.key.split("/")[3] for s, t in object_store.copies}
    assert sources == {key: "attempt-2" if key == "part-0002.parquet" else "attempt-1" for key in INPUTS}
    assert not list(object_store.list(job_staging(str(OUTPUT), succeeded.job_id)))


def test_publish_refuses_a_job_that_has_not_succeeded(object_store, job_store, backend, prepared, script):
    job = prepared()
    submit_job(job.job_id, job_store, backend)
    script.run(job.job_id)  # every output is staged, but the processing job has not ended

    with pytest.raises(PublishError, match=f"job {job.job_id} is RUNNING, not SUCCEEDED: nothing to publish"):
        publish_job(job.job_id, job_store, object_store)

    assert visible(object_store) == {}
    assert not list(object_store.list(OUTPUT.join("_SUCCESS")))


def staged(record: JobRecord, attempt: int, key: str) -> S3Uri:
    return attempt_staging(str(OUTPUT), record.job_id, attempt).join(key)


def delete_output(objects, record: JobRecord) -> None:
    objects.delete(staged(record, 1, "late/part-0003.parquet"))


def rewrite(attempt: int, host: int, change: Callable[[dict], None]) -> Callable:
    """A tamper that edits the manifest one instance (``algo-<host>``) of one attempt wrote."""

    def tamper(objects, record: JobRecord) -> None:
        uri = staged(record, attempt, f"_manifests/{record.processing_jobs[attempt - 1]}-algo-{host}.json")
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


def drop_sha256(content: dict) -> None:
    del content["files"][0]["sha256"]


def mismatch(record: JobRecord) -> str:
    return f"outputs staged under s3://shardflow-unit/out/_staging/{record.job_id}/ do not match its inputs:"


@pytest.mark.parametrize(
    ("tamper", "lines"),
    [
        (delete_output, ["late/part-0003.parquet (for late/part-0003.parquet) is missing from attempt 1's staging"]),
        (rewrite(1, 1, forget_first_entry), ["no output for input late/part-0001.parquet"]),
        (
            rewrite(1, 2, add_stranger),
            [
                "output for other/part-9.parquet is not an input of this job",
                "part-0000.parquet is written by more than one input",
            ],
        ),
        (
            rewrite(1, 1, drop_sha256),
            ["late/part-0001.parquet (for late/part-0001.parquet) has no sha256 in its manifest"],
        ),
        (rewrite(2, 1, miscount_rows), None),
    ],
    ids=["missing-output", "input-without-output", "output-of-another-input", "no-sha256", "rows-disagree"],
)
def test_publish_refuses_outputs_that_do_not_match_the_record(object_store, job_store, succeeded, tamper, lines):
    tamper(object_store, succeeded)

    with pytest.raises(PublishError) as refused:
        publish_job(succeeded.job_id, job_store, object_store)

    message = str(refused.value).removeprefix(f"job {succeeded.job_id}: ").splitlines()
    assert message == (
        [mismatch(succeeded), *lines] if lines else ["manifests count 1099 rows but the job record counts 1100"]
    )
    assert visible(object_store) == {}
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
        mismatch(succeeded),
        "manifest output '../../../tmp/x/pwned.parquet' is refused: "
        "it has a '..' segment, which climbs out of its folder",
    ]
    assert not list(object_store.list(OUTPUT.join("_SUCCESS")))
    assert not [o.key for o in object_store.list(S3Uri("shardflow-unit", "")) if "pwned" in o.key]


def test_a_staged_output_that_is_not_what_its_manifest_says_is_never_left_visible(object_store, job_store, succeeded):
    target = staged(succeeded, 1, "part-0000.parquet")
    object_store.put(target, object_store.read(target) + b"tampered after the manifest was written")

    with pytest.raises(PublishError) as refused:
        publish_job(succeeded.job_id, job_store, object_store)

    assert f"{target} has sha256 " in str(refused.value)
    assert "the staged output is not what its attempt wrote" in str(refused.value)
    assert "part-0000.parquet" not in visible(object_store)
    assert not list(object_store.list(OUTPUT.join("_SUCCESS")))


def test_an_orphans_late_upload_after_publish_changes_nothing_readers_see(object_store, job_store, succeeded):
    publish_job(succeeded.job_id, job_store, object_store)
    before = visible(object_store)

    # Attempt 1, orphaned, ends now and uploads what it made, as a stale SageMaker job would.
    for key in INPUTS:
        object_store.put(staged(succeeded, 1, key), b"stale predictions")
    object_store.put(staged(succeeded, 1, f"_manifests/{succeeded.processing_jobs[0]}-algo-1.json"), b"{}")
    summary = publish_job(succeeded.job_id, job_store, object_store)  # a cleared publish task

    assert summary["rows"] == 1100
    assert visible(object_store) == before
    published_matches_manifest(object_store)
    assert not list(object_store.list(job_staging(str(OUTPUT), succeeded.job_id)))


def test_a_publish_that_died_half_way_is_resumed_by_the_next_try(object_store, job_store, succeeded, monkeypatch):
    real_copy, copies = object_store.copy, []

    def dies_after_two(source, target, *, create_only):
        if len(copies) == 2:
            raise ConnectionError("the worker lost its network")
        copies.append(target)
        return real_copy(source, target, create_only=create_only)

    monkeypatch.setattr(object_store, "copy", dies_after_two)
    with pytest.raises(ConnectionError):
        publish_job(succeeded.job_id, job_store, object_store)
    assert json.loads(object_store.read(OUTPUT.join("_manifest.json")))["job_id"] == succeeded.job_id  # claimed
    assert not list(object_store.list(OUTPUT.join("_SUCCESS")))
    monkeypatch.setattr(object_store, "copy", real_copy)

    publish_job(succeeded.job_id, job_store, object_store)

    assert published_matches_manifest(object_store)["rows"] == 1100
    assert object_store.read(OUTPUT.join("_SUCCESS")) == b""


def publish_other_job(object_store, keys=("part-0000.parquet", "old-only.parquet")) -> None:
    """Another job's published outputs under the prefix."""
    files = []
    for key in keys:
        body = f"old predictions of {key}".encode()
        object_store.put(OUTPUT.join(key), body)
        files.append({"input": key, "output": key, "rows": 1, "sha256": hashlib.sha256(body).hexdigest()})
    manifest = {"job_id": "churn-0123456789ab", "files": files, "rows": len(files)}
    object_store.put(OUTPUT.join("_manifest.json"), json.dumps(manifest).encode())
    object_store.put(OUTPUT.join("_SUCCESS"), b"")


def test_without_overwrite_publish_refuses_a_prefix_another_job_published(object_store, job_store, succeeded):
    publish_other_job(object_store)
    before = dict(object_store.objects)

    with pytest.raises(PublishError) as refused:
        publish_job(succeeded.job_id, job_store, object_store)

    assert str(refused.value) == (
        f"job {succeeded.job_id}: output prefix s3://shardflow-unit/out/ holds the published outputs of job "
        "churn-0123456789ab (2 object(s) readers see); to replace them, set output.overwrite: true in the "
        "pipeline spec (the trigger form's overwrite, or shardflow run --overwrite); otherwise write to another "
        "output prefix"
    )
    assert {k: v for k, v in object_store.objects.items() if not k.key.startswith("out/_staging/")} == {
        k: v for k, v in before.items() if not k.key.startswith("out/_staging/")
    }


def test_without_overwrite_publish_refuses_objects_no_job_published(object_store, job_store, succeeded):
    object_store.put(OUTPUT.join("by-hand.parquet"), b"someone's file")

    with pytest.raises(
        PublishError, match=re.escape("holds 1 object(s) no Shardflow job published, e.g. by-hand.parquet")
    ):
        publish_job(succeeded.job_id, job_store, object_store)

    assert visible(object_store) == {"by-hand.parquet": b"someone's file"}


def test_with_overwrite_the_new_set_replaces_the_old_and_none_of_it_stays_visible(object_store, job_store, run_job):
    publish_other_job(object_store)
    record = run_job(overwrite=True)

    publish_job(record.job_id, job_store, object_store)

    manifest = published_matches_manifest(object_store)
    assert manifest["job_id"] == record.job_id
    assert sorted(visible(object_store)) == INPUTS  # old-only.parquet is gone, part-0000 replaced
    assert b"old predictions" not in b"".join(visible(object_store).values())
    assert object_store.read(OUTPUT.join("_SUCCESS")) == b""


def test_race_two_jobs_claiming_one_prefix_the_second_is_refused(object_store, job_store, succeeded, monkeypatch):
    """Both read the prefix empty; the other job writes its manifest first (create-only)."""
    real_put = object_store.put

    def other_claims_first(uri, body, *, create_only=False):
        if uri == OUTPUT.join("_manifest.json") and not any(o.key == uri.key for o in object_store.list(uri)):
            real_put(uri, json.dumps({"job_id": "churn-other", "files": []}).encode())
        real_put(uri, body, create_only=create_only)

    monkeypatch.setattr(object_store, "put", other_claims_first)

    with pytest.raises(PublishError, match="another job claimed s3://shardflow-unit/out/ while this one"):
        publish_job(succeeded.job_id, job_store, object_store)

    assert json.loads(object_store.objects[OUTPUT.join("_manifest.json")])["job_id"] == "churn-other"
    assert visible(object_store) == {}


def test_race_an_object_written_during_promotion_fails_the_publish_without_success(
    object_store, job_store, succeeded, monkeypatch
):
    real_copy = object_store.copy

    def stranger_first(source, target, *, create_only):
        if target.key == "out/part-0000.parquet":
            object_store.objects[target] = b"written by someone else meanwhile"
        return real_copy(source, target, create_only=create_only)

    monkeypatch.setattr(object_store, "copy", stranger_first)

    with pytest.raises(
        PublishError, match=re.escape("out/part-0000.parquet was written by someone else while this job")
    ):
        publish_job(succeeded.job_id, job_store, object_store)

    assert visible(object_store)["part-0000.parquet"] == b"written by someone else meanwhile"
    assert not list(object_store.list(OUTPUT.join("_SUCCESS")))


def test_the_fake_copy_is_create_only_as_s3_with_if_none_match(object_store):
    object_store.put(OUTPUT.join("a"), b"a")
    object_store.put(OUTPUT.join("b"), b"b")

    with pytest.raises(ObjectExists):
        object_store.copy(OUTPUT.join("a"), OUTPUT.join("b"), create_only=True)
    assert object_store.copy(OUTPUT.join("a"), OUTPUT.join("b"), create_only=False) == hashlib.sha256(b"a").hexdigest()
