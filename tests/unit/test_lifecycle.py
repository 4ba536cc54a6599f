"""Submit, settle and advance a job over the in-memory ports: the requests the backend receives,
the statuses and errors the job record shows, with real inputs, the real model and a stand-in
for the processing script (``script``, in conftest)."""

import contextlib
from datetime import UTC, datetime, timedelta

import pytest
from support.fakes import InMemoryJobStore
from support.records import sample_job

from shardflow.core.lifecycle import advance_job, retry_at, settle_job, stop_job, submit_job, wait_timeout_seconds
from shardflow.core.planning import processing_job_name
from shardflow.core.ports import ProcessingRequest, ProcessingState
from shardflow.core.prepare import prepare_job
from shardflow.core.publish import publish_job
from shardflow.core.record import ErrorKind, FileStatus, JobStatus, parse_time
from shardflow.core.s3uri import S3Uri
from shardflow.core.status_table import job_progress
from shardflow.errors import JobFailed, PublishError

COMPLETED, FAILED = ProcessingState.COMPLETED, ProcessingState.FAILED
KEYS = ("late/part-0001.parquet", "late/part-0003.parquet", "part-0000.parquet", "part-0002.parquet")
UNREADABLE = "ArrowInvalid: Parquet magic bytes not found in footer: is this a Parquet file?"


def test_submit_starts_one_attempt_over_every_input(job_store, backend, prepared):
    job = prepared(instance_count=2)

    record = submit_job(job.job_id, job_store, backend)

    name = processing_job_name(job.job_id, 1)
    assert (record.status, record.attempt, record.processing_jobs) == (JobStatus.SUBMITTED, 1, [name])
    assert record.attempt_files == 4 and job_store.get_job(job.job_id) == record
    assert backend.requests == [
        ProcessingRequest(
            job=job.job,
            job_id=job.job_id,
            job_table="shardflow-jobs",
            attempt=1,
            job_name=name,
            input_keys=tuple(f"in/{key}" for key in KEYS),
            instance_count=2,
            model=job.model,
        )
    ]


def test_the_name_is_recorded_before_the_job_starts_and_a_retried_submit_starts_it(job_store, backend, prepared):
    job = prepared()
    name = processing_job_name(job.job_id, 1)
    backend.crash_next_submit(ConnectionResetError("the worker running the task was lost"))

    with pytest.raises(ConnectionResetError):
        submit_job(job.job_id, job_store, backend)

    recorded = job_store.get_job(job.job_id)
    assert (recorded.status, recorded.processing_jobs) == (JobStatus.SUBMITTED, [name])
    assert backend.describe(name) is None and backend.requests == []

    retried = submit_job(job.job_id, job_store, backend)

    assert (retried.attempt, retried.processing_jobs) == (1, [name])
    assert [(r.job_name, r.attempt, len(r.input_keys)) for r in backend.requests] == [(name, 1, 4)]


def test_a_retried_submit_reconnects_to_the_running_attempt(job_store, backend, prepared):
    job = prepared()
    first = submit_job(job.job_id, job_store, backend)

    again = submit_job(job.job_id, job_store, backend)

    assert again == first == job_store.get_job(job.job_id)
    assert len(backend.requests) == 1


def test_a_name_taken_by_an_earlier_try_is_a_reconnect_not_a_second_job(
    job_store, object_store, backend, prepared, job_spec
):
    job = prepared()
    submit_job(job.job_id, job_store, backend)  # the task starts the job, then its record write is lost
    lost = InMemoryJobStore()
    prepare_job(job_spec(), lost, object_store)

    again = submit_job(job.job_id, lost, backend)

    assert (again.status, again.processing_jobs) == (JobStatus.SUBMITTED, [processing_job_name(job.job_id, 1)])
    assert len(backend.requests) == 1


def test_a_refused_request_fails_the_job_at_once_with_the_reason(job_store, backend, prepared):
    job = prepared()
    name = processing_job_name(job.job_id, 1)
    backend.refuse("image_uri: the image is in eu-west-1 but jobs run in us-east-1")

    with pytest.raises(JobFailed) as failure:
        submit_job(job.job_id, job_store, backend)

    assert str(failure.value) == (
        f"job {job.job_id}: the fake backend refused processing job {name}:\n"
        "image_uri: the image is in eu-west-1 but jobs run in us-east-1\n"
        "Fix the pipeline spec and trigger a new run."
    )
    stored = job_store.get_job(job.job_id)
    assert stored.status is JobStatus.FAILED and "the image is in eu-west-1" in stored.error
    assert backend.requests == []


def test_a_refused_resubmission_fails_the_wait_with_attempts_left(job_store, object_store, backend, prepared, script):
    job = prepared(max_attempts=3)
    submit_job(job.job_id, job_store, backend)
    backend.set_state(script.run(job.job_id, fail={"part-0000.parquet": UNREADABLE}), COMPLETED)
    backend.refuse("role_arn: the role was deleted")

    with pytest.raises(JobFailed, match=f"refused processing job {processing_job_name(job.job_id, 2)}"):
        advance_job(job.job_id, job_store, backend, object_store)

    stored = job_store.get_job(job.job_id)
    assert (stored.status, stored.attempt) == (JobStatus.FAILED, 2)
    assert len(backend.requests) == 1


def test_a_resubmission_covers_only_the_files_that_did_not_succeed(job_store, object_store, backend, prepared, script):
    job = prepared(instance_count=2, max_attempts=3)
    submit_job(job.job_id, job_store, backend)
    first = script.run(job.job_id, fail={"part-0000.parquet": UNREADABLE}, unreported={"late/part-0003.parquet"})
    backend.set_state(first, COMPLETED)

    progress = advance_job(job.job_id, job_store, backend, object_store)

    second = processing_job_name(job.job_id, 2)
    record = progress.record
    assert (record.status, record.attempt, record.processing_jobs) == (JobStatus.SUBMITTED, 2, [first, second])
    assert (record.attempt_files, record.progress_files, record.error) == (2, 0, None)
    request = backend.requests[-1]
    assert (request.job_name, request.attempt) == (second, 2)
    assert request.input_keys == ("in/late/part-0003.parquet", "in/part-0000.parquet")

    backend.set_state(script.run(job.job_id), COMPLETED)
    done = advance_job(job.job_id, job_store, backend, object_store)

    assert done.summary is not None
    assert {k: done.summary[k] for k in ("status", "attempts", "files", "files_succeeded", "files_failed", "rows")} == {
        "status": "SUCCEEDED",
        "attempts": 2,
        "files": 4,
        "files_succeeded": 4,
        "files_failed": 0,
        "rows": 1100,
    }
    assert len(backend.requests) == 2


@pytest.mark.parametrize(
    ("instance_count", "failing", "expected"),
    [(10, (), 4), (3, (), 3), (10, ("part-0000.parquet",), 1), (2, KEYS[:3], 2)],
)
def test_an_attempt_never_asks_for_more_instances_than_it_has_files(
    job_store, object_store, backend, prepared, script, instance_count, failing, expected
):
    job = prepared(instance_count=instance_count, max_attempts=2)
    submit_job(job.job_id, job_store, backend)
    if failing:
        backend.set_state(script.run(job.job_id, fail=dict.fromkeys(failing, UNREADABLE)), COMPLETED)
        advance_job(job.job_id, job_store, backend, object_store)

    request = backend.requests[-1]
    assert request.instance_count == expected
    assert len(request.input_keys) == (len(failing) or 4)


def test_no_attempt_is_submitted_without_files(job_store, object_store, backend, prepared, script):
    """Every file succeeded and its output is in S3, but the backend says the job failed (it died
    after uploading): the next attempt has nothing to predict, so it must not start."""
    job = prepared(instance_count=2, max_attempts=3)
    submit_job(job.job_id, job_store, backend)
    backend.set_state(script.run(job.job_id), FAILED, "InternalServerError: the job failed after its upload")

    with contextlib.suppress(JobFailed):  # failing the job is fine; starting an empty attempt is not
        advance_job(job.job_id, job_store, backend, object_store)

    assert all(1 <= r.instance_count <= len(r.input_keys) for r in backend.requests), [
        (r.job_name, r.input_keys, r.instance_count) for r in backend.requests
    ]


def test_a_job_succeeds_only_once_the_backend_completed_and_every_output_exists(
    job_store, object_store, backend, prepared, script
):
    job = prepared()
    submit_job(job.job_id, job_store, backend)
    name = script.run(job.job_id)

    running = settle_job(job.job_id, job_store, backend, object_store)  # every file reported; still InProgress

    assert running.status is JobStatus.RUNNING and running.finished_at is None
    backend.set_state(name, COMPLETED)

    done = settle_job(job.job_id, job_store, backend, object_store)

    assert done.status is JobStatus.SUCCEEDED and done.finished_at is not None
    assert (done.files_succeeded, done.files_failed, done.rows, done.error) == (4, 0, 1100, None)
    assert job_store.get_job(job.job_id) == done


def test_a_file_whose_output_never_arrived_goes_back_to_pending(job_store, object_store, backend, prepared, script):
    job = prepared()
    submit_job(job.job_id, job_store, backend)
    name = script.run(job.job_id)
    object_store.delete(backend.requests[-1].staging_prefix.join("part-0002.parquet"))
    backend.set_state(name, COMPLETED)

    record = settle_job(job.job_id, job_store, backend, object_store)

    assert record.status is JobStatus.FAILED
    assert (record.files_succeeded, record.files_failed, record.rows) == (3, 0, 600)
    lost = f"output part-0002.parquet never reached S3 ({name} completed but its outputs are missing)"
    assert record.error == f"1 file(s) have no result, e.g. part-0002.parquet: {lost}"
    files = {f.key: f for f in job_store.list_files(job.job_id)}
    assert (files["part-0002.parquet"].status, files["part-0002.parquet"].error) == (FileStatus.PENDING, lost)
    assert {files[k].status for k in KEYS if k != "part-0002.parquet"} == {FileStatus.SUCCEEDED}


def test_a_failed_processing_job_gives_its_reason_and_its_unuploaded_files_back(
    job_store, object_store, backend, prepared, script
):
    job = prepared()
    submit_job(job.job_id, job_store, backend)
    name = script.run(job.job_id, fail={"part-0000.parquet": UNREADABLE}, upload=False)
    backend.set_state(name, FAILED, "AlgorithmError: instance algo-2 exited with code 137 (out of memory)")

    record = settle_job(job.job_id, job_store, backend, object_store)

    assert record.status is JobStatus.FAILED
    assert record.error.splitlines() == [
        f"processing job {name} Failed: AlgorithmError: instance algo-2 exited with code 137 (out of memory)",
        f"part-0000.parquet: {UNREADABLE}",
        "3 file(s) have no result, e.g. late/part-0001.parquet: output late/part-0001.parquet never reached S3 "
        f"({name} ended without completing)",
    ]
    assert [f.status for f in job_store.list_files(job.job_id)] == [
        FileStatus.PENDING,
        FileStatus.PENDING,
        FileStatus.FAILED,
        FileStatus.PENDING,
    ]


@pytest.mark.parametrize(("silence", "stopped"), [(30, False), (300, True)])
def test_an_attempt_silent_past_its_heartbeat_timeout_is_stopped(
    job_store, object_store, backend, prepared, script, silence, stopped
):
    job = prepared(heartbeat_timeout_seconds=120)
    submit_job(job.job_id, job_store, backend)
    job_store.clock = lambda: datetime.now(UTC) - timedelta(seconds=silence)
    name = script.run(job.job_id, unreported=KEYS[2:], upload=False)  # two files done, then it froze
    job_store.clock = lambda: datetime.now(UTC)

    record = settle_job(job.job_id, job_store, backend, object_store)

    if not stopped:
        assert record.status is JobStatus.RUNNING and backend.stopped == []
        return
    assert backend.stopped == [name]
    assert record.status is JobStatus.FAILED
    assert record.error.startswith(
        f"processing job {name} sent no heartbeat since {record.heartbeat_at} "
        "(heartbeat_timeout_seconds=120); it was stopped"
    )
    assert {f.status for f in job_store.list_files(job.job_id)} == {FileStatus.PENDING}


@pytest.mark.parametrize(("failed_ago", "waits"), [(10, True), (31, False)])
def test_advance_backs_off_before_it_resubmits(job_store, object_store, backend, prepared, script, failed_ago, waits):
    job = prepared(backoff_seconds=30)
    submit_job(job.job_id, job_store, backend)
    backend.set_state(script.run(job.job_id, fail={"part-0000.parquet": UNREADABLE}), COMPLETED)
    job_store.clock = lambda: datetime.now(UTC) - timedelta(seconds=failed_ago)
    failed = settle_job(job.job_id, job_store, backend, object_store)

    progress = advance_job(job.job_id, job_store, backend, object_store)

    if waits:
        assert progress.retry_at == parse_time(failed.finished_at) + timedelta(seconds=30)
        assert (progress.record.status, len(backend.requests)) == (JobStatus.FAILED, 1)
    else:
        assert progress.retry_at is None
        assert (progress.record.status, progress.record.attempt, len(backend.requests)) == (JobStatus.SUBMITTED, 2, 2)


def test_advance_fails_the_job_when_its_attempts_run_out(job_store, object_store, backend, prepared, script):
    job = prepared(max_attempts=2)
    submit_job(job.job_id, job_store, backend)
    backend.set_state(script.run(job.job_id, fail={"part-0000.parquet": UNREADABLE}), COMPLETED)
    assert advance_job(job.job_id, job_store, backend, object_store).record.attempt == 2
    backend.set_state(script.run(job.job_id, fail={"part-0000.parquet": UNREADABLE}), COMPLETED)

    with pytest.raises(JobFailed) as failure:
        advance_job(job.job_id, job_store, backend, object_store)

    assert str(failure.value).splitlines() == [
        f"job {job.job_id} FAILED after 2 of 2 attempt(s); 1 of 4 file(s) failed. What went wrong:",
        f"part-0000.parquet: {UNREADABLE}",
        "The outputs of the 3 file(s) that succeeded are kept, unpublished, under "
        f"s3://shardflow-unit/out/_staging/{job.job_id}/; "
        "fix the inputs named above and clear the task to resubmit only what failed.",
    ]
    assert len(backend.requests) == 2
    with pytest.raises(JobFailed, match=f"job {job.job_id} failed after 2 attempt"):
        submit_job(job.job_id, job_store, backend)  # a cleared submit task starts nothing either
    assert len(backend.requests) == 2


def test_a_cancelled_job_fails_the_wait_and_is_never_resubmitted(job_store, object_store, backend, prepared):
    job = prepared()
    record = submit_job(job.job_id, job_store, backend)
    job_store.transition(record, JobStatus.CANCELLED)

    with pytest.raises(JobFailed, match=f"job {job.job_id} CANCELLED after 1 of 3 attempt"):
        advance_job(job.job_id, job_store, backend, object_store)
    with pytest.raises(JobFailed, match=f"job {job.job_id} was cancelled"):
        submit_job(job.job_id, job_store, backend)
    assert len(backend.requests) == 1


FINISHED = "2026-01-31T10:00:00.000000Z"


@pytest.mark.parametrize(
    ("attempt", "backoff", "delay"),
    [(1, 30, 30), (2, 30, 60), (3, 30, 120), (1, 0, 0), (4, 900, 3600), (10, 3600, 3600)],
)
def test_each_failed_attempt_doubles_the_backoff_up_to_an_hour(attempt, backoff, delay):
    record = sample_job(status=JobStatus.FAILED, attempt=attempt, backoff_seconds=backoff, finished_at=FINISHED)
    assert retry_at(record) == parse_time(FINISHED) + timedelta(seconds=delay)


@pytest.mark.parametrize(
    ("attempts", "runtime", "backoff"),
    [(1, 3600, 30), (3, 3600, 30), (5, 3600, 600), (10, 600, 300), (10, 60, 3600)],
)
def test_the_wait_outlasts_every_attempts_runtime_and_backoff(attempts, runtime, backoff):
    """The sensor's timeout: every attempt may use its whole runtime, and each failed one waits
    for its backoff (as :func:`retry_at` gives it) before the next starts."""
    backoffs = [
        retry_at(sample_job(attempt=n, backoff_seconds=backoff, finished_at=FINISHED)) - parse_time(FINISHED)
        for n in range(1, attempts)
    ]
    needed = attempts * runtime + sum(delay.total_seconds() for delay in backoffs)

    assert wait_timeout_seconds(attempts, runtime, backoff) >= needed


def test_a_bad_input_is_never_resubmitted_and_the_job_fails_at_once(job_store, object_store, backend, prepared, script):
    job = prepared(max_attempts=3)
    submit_job(job.job_id, job_store, backend)
    backend.set_state(script.run(job.job_id, fail={"part-0000.parquet": (ErrorKind.INPUT, UNREADABLE)}), COMPLETED)

    with pytest.raises(JobFailed) as failure:
        advance_job(job.job_id, job_store, backend, object_store)

    assert str(failure.value).splitlines() == [
        f"job {job.job_id} FAILED after 1 of 3 attempt(s); 1 of 4 file(s) failed. What went wrong:",
        f"part-0000.parquet: {UNREADABLE}",
        "The outputs of the 3 file(s) that succeeded are kept, unpublished, under "
        f"s3://shardflow-unit/out/_staging/{job.job_id}/; "
        "fix the inputs named above and start a new run, as a bad input is never retried.",
    ]
    stored = job_store.get_job(job.job_id)
    assert (stored.status, stored.attempt, len(stored.processing_jobs)) == (JobStatus.FAILED, 1, 1)
    with pytest.raises(JobFailed, match="a bad input is never retried"):
        submit_job(job.job_id, job_store, backend)  # a cleared submit task starts nothing either
    assert len(backend.requests) == 1
    assert not job_store.get_job(job.job_id).status.is_active


def test_a_bad_input_model_error_names_the_model_and_is_never_resubmitted(
    job_store, object_store, backend, prepared, script
):
    job = prepared(max_attempts=3)
    submit_job(job.job_id, job_store, backend)
    raised = (ErrorKind.MODEL, "XGBoostError: feature_names mismatch")
    backend.set_state(script.run(job.job_id, fail=dict.fromkeys(KEYS, raised)), COMPLETED)

    with pytest.raises(JobFailed) as failure:
        advance_job(job.job_id, job_store, backend, object_store)

    message = str(failure.value)
    assert "FAILED after 1 of 3 attempt(s); 4 of 4 file(s) failed" in message
    assert message.endswith(
        "the model s3://shardflow-unit/models/demo.joblib failed on the files named above: fix the model "
        "(or the spec's model) and start a new run, as a model error is never retried."
    )
    assert "fix the inputs" not in message
    assert len(backend.requests) == 1


def test_a_bad_input_beside_a_transient_failure_resubmits_only_the_transient_file(
    job_store, object_store, backend, prepared, script
):
    job = prepared(max_attempts=3)
    submit_job(job.job_id, job_store, backend)
    fail = {
        "part-0000.parquet": (ErrorKind.INPUT, UNREADABLE),
        "part-0002.parquet": (ErrorKind.TRANSIENT, "two workers died on this file, so it was not predicted"),
    }
    backend.set_state(script.run(job.job_id, fail=fail), COMPLETED)

    progress = advance_job(job.job_id, job_store, backend, object_store)

    assert (progress.record.status, progress.record.attempt) == (JobStatus.SUBMITTED, 2)
    assert backend.requests[-1].input_keys == ("in/part-0002.parquet",)
    backend.set_state(script.run(job.job_id), COMPLETED)
    with pytest.raises(JobFailed, match=r"FAILED after 2 of 3 attempt\(s\); 1 of 4 file\(s\) failed") as failure:
        advance_job(job.job_id, job_store, backend, object_store)
    assert f"part-0000.parquet: {UNREADABLE}" in str(failure.value)
    assert len(backend.requests) == 2


def test_hostile_keys_refused_at_prepare_fail_the_job_once_the_good_files_are_done(
    job_store, object_store, backend, prepared, script
):
    object_store.put(S3Uri("shardflow-unit", "in/a/../../b.parquet"), b"PAR1 never read")
    job = prepared(max_attempts=3)

    submit_job(job.job_id, job_store, backend)
    assert backend.requests[-1].input_keys == tuple(f"in/{key}" for key in KEYS)
    backend.set_state(script.run(job.job_id), COMPLETED)
    with pytest.raises(JobFailed) as failure:
        advance_job(job.job_id, job_store, backend, object_store)

    message = str(failure.value)
    assert "FAILED after 1 of 3 attempt(s); 0 of 4 file(s) failed" in message
    assert (
        "1 input key(s) refused and never read: key 'in/a/../../b.parquet' is refused: it has a '..' segment" in message
    )
    assert "as a bad input is never retried" in message
    assert len(backend.requests) == 1
    assert object_store.read(backend.requests[-1].staging_prefix.join("part-0000.parquet"))  # good outputs are kept
    with pytest.raises(PublishError, match="is FAILED, not SUCCEEDED"):
        publish_job(job.job_id, job_store, object_store)


def test_each_attempt_is_logged_with_its_processing_job_instances_times_and_outcome(
    job_store, object_store, backend, prepared, script
):
    job = prepared(instance_count=3, max_attempts=3)
    submit_job(job.job_id, job_store, backend)
    first = script.run(job.job_id, fail={"part-0000.parquet": UNREADABLE}, unreported={"late/part-0003.parquet"})
    backend.set_state(first, COMPLETED)
    advance_job(job.job_id, job_store, backend, object_store)
    second = script.run(job.job_id)
    backend.set_state(second, COMPLETED)

    record = advance_job(job.job_id, job_store, backend, object_store).record

    one, two = record.attempts
    assert (one.number, one.processing_job, one.backend, one.instance_count, one.files) == (1, first, "local", 3, 4)
    assert (two.number, two.processing_job, two.instance_count, two.files) == (2, second, 2, 2)
    assert (one.status, two.status) == (JobStatus.FAILED, JobStatus.SUCCEEDED)
    assert one.reason is not None and "part-0000.parquet" in one.reason and two.reason is None
    assert one.submitted_at <= one.ended_at <= two.submitted_at <= two.ended_at  # type: ignore[operator]
    assert two.ended_at == record.finished_at


def test_a_stop_closes_the_running_attempt_and_keeps_what_its_files_had_done(job_store, backend, prepared, script):
    job = prepared()
    submit_job(job.job_id, job_store, backend)
    script.run(job.job_id, unreported=KEYS[2:], upload=False)  # two files done, still running

    record = stop_job(job.job_id, job_store, backend, by="ada")

    (attempt,) = record.attempts
    assert attempt.status is JobStatus.CANCELLED and attempt.reason is not None and "stopped by ada" in attempt.reason
    assert (attempt.files_done, record.files_succeeded, record.files_total) == (2, 2, 4)
    assert record.rows == attempt.rows > 0
    progress = job_progress(record)
    assert (progress.files_text, progress.rows) == ("2/4", record.rows)
    assert job_store.get_job(job.job_id) == record
