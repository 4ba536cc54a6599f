"""Reruns are explicit: a run finds its own job (and keeps the record's plan) unless its spec
changed, an output prefix another job published is refused without ``overwrite``, and an output
prefix that overlaps the input prefix is a spec error."""

import hashlib
import json
import re

import pytest
from support.records import sample_job_spec

from shardflow.core.lifecycle import stop_job, submit_job
from shardflow.core.planning import job_id_for_run
from shardflow.core.prepare import prepare_job
from shardflow.core.reruns import newest_job_of_run, plan_for_run, spec_changes
from shardflow.core.s3uri import S3Uri
from shardflow.errors import PrepareError

OUTPUT = S3Uri("shardflow-unit", "out/")


@pytest.mark.parametrize(
    ("output", "how"),
    [
        ("s3://shardflow-demo/events/", "is"),
        ("s3://shardflow-demo/events/scored/", "lies inside"),
        ("s3://shardflow-demo/", "contains"),
    ],
)
def test_an_output_prefix_overlapping_the_input_prefix_is_a_spec_error_naming_both(output, how):
    with pytest.raises(ValueError) as refused:
        sample_job_spec(input_prefix="s3://shardflow-demo/events/", output_prefix=output)

    assert f"output.prefix {output} {how} input.prefix s3://shardflow-demo/events/" in str(refused.value)
    assert "write the outputs under a prefix apart from the inputs" in str(refused.value)


def test_prefixes_that_only_share_a_beginning_do_not_overlap():
    job = sample_job_spec(
        input_prefix="s3://shardflow-demo/events/", output_prefix="s3://shardflow-demo/events-scored/"
    )
    assert job.output.prefix == "s3://shardflow-demo/events-scored/"


def publish_other_job(object_store) -> None:
    body = b"old predictions"
    files = [{"input": "a.parquet", "output": "a.parquet", "rows": 1, "sha256": hashlib.sha256(body).hexdigest()}]
    object_store.put(OUTPUT.join("a.parquet"), body)
    object_store.put(
        OUTPUT.join("_manifest.json"), json.dumps({"job_id": "churn-0123456789ab", "files": files}).encode()
    )
    object_store.put(OUTPUT.join("_SUCCESS"), b"")


def test_without_overwrite_prepare_refuses_a_prefix_another_job_published_and_writes_no_job(
    object_store, job_store, prepared, job_spec
):
    publish_other_job(object_store)

    with pytest.raises(PrepareError) as refused:
        prepared()

    assert str(refused.value).startswith(
        "output prefix s3://shardflow-unit/out/ holds the published outputs of job churn-0123456789ab "
        "(1 object(s) readers see); to replace them, set output.overwrite: true"
    )
    job = job_spec()
    assert job_store.list_files(job_id_for_run(job.pipeline, job.dag_id, job.run_id)) == []


def test_with_overwrite_prepare_accepts_a_prefix_another_job_published(object_store, prepared):
    publish_other_job(object_store)

    record = prepared(overwrite=True)

    assert record.job.output.overwrite is True
    assert record.files_total == 4


def test_a_rerun_with_the_same_spec_finds_its_job_and_keeps_the_records_plan(job_store, prepared, job_spec):
    first = prepared()

    assert plan_for_run(job_spec(), job_store) == (first.job_id, first)


def test_a_rerun_after_the_spec_changed_is_a_new_job_with_the_new_spec(
    object_store, job_store, backend, prepared, job_spec
):
    first = prepared()
    stop_job(first.job_id, job_store, backend, by="a test")  # the first job has ended
    changed = job_spec(instance_count=1, max_attempts=2)

    second = prepare_job(changed, job_store, object_store)

    assert second.job_id == f"{first.job_id}-r2"
    assert second.job == changed
    assert job_store.get_job(first.job_id).job == job_spec()  # the first keeps its own plan
    assert prepare_job(changed, job_store, object_store).job_id == second.job_id
    assert spec_changes(first.job, changed) == ["compute.instance_count", "retries.max_attempts"]
    # The run's page (the DAG-run view) opens its newest job.
    spec = first.job
    assert newest_job_of_run(spec.pipeline, spec.dag_id, spec.run_id, job_store) == second
    assert newest_job_of_run(spec.pipeline, spec.dag_id, "manual__never", job_store) is None


def test_a_rerun_after_the_spec_changed_is_refused_while_the_first_job_runs(job_store, backend, prepared, job_spec):
    first = prepared()
    submit_job(first.job_id, job_store, backend)

    with pytest.raises(PrepareError) as refused:
        plan_for_run(job_spec(overwrite=True), job_store)

    assert str(refused.value) == (
        f"job {first.job_id} of run manual__1 is SUBMITTED with the spec it was prepared from, which differs "
        f"from today's in output.overwrite: stop it (shardflow jobs stop {first.job_id}) or let it end, then "
        "clear the run again to run the new spec"
    )
    assert re.fullmatch(r"churn-[0-9a-f]{12}", first.job_id)
