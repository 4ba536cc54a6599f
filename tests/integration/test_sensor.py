"""The sensor and its trigger at their seams: deferring, serializing, firing, and stopping a job."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from airflow.sdk.exceptions import TaskDeferred
from support.jobs import launch, sensor_for, wait_for

from shardflow.airflow.triggers import JobTrigger
from shardflow.aws.s3 import S3ObjectStore
from shardflow.core.lifecycle import settle_job
from shardflow.core.ports import ProcessingState
from shardflow.core.record import JobStatus


def test_a_waiting_job_defers_to_a_serializable_trigger(s3, store, bucket, local_env):
    record, *_ = launch(s3, store, bucket, seconds_per_call=1.0)
    sensor = sensor_for(record.job_id, store)
    sensor.deferrable = True

    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute({})

    trigger = deferred.value.trigger
    assert isinstance(trigger, JobTrigger) and deferred.value.method_name == "execute_complete"
    path, kwargs = trigger.serialize()
    assert path == "shardflow.airflow.triggers.JobTrigger"
    rebuilt = JobTrigger(**kwargs)  # what a triggerer does, possibly another one
    assert rebuilt.serialize() == (path, kwargs)
    assert kwargs["backend_config"]["root"] == str(local_env)
    assert "testing" not in json.dumps(kwargs)  # the connection's credentials never enter the trigger

    async def first_event():
        async for event in rebuilt.run():
            return event.payload

    payload = asyncio.run(asyncio.wait_for(first_event(), timeout=120))
    assert payload["job_id"] == record.job_id
    assert sensor.execute_complete({}, payload)["status"] == "SUCCEEDED"


def test_killing_the_running_sensor_stops_its_processing_job(s3, store, bucket, local_env):
    record, *_ = launch(s3, store, bucket, seconds_per_call=1.0)
    sensor = sensor_for(record.job_id, store)
    backend = sensor.hook.backend("local")

    sensor.on_kill()

    status = wait_for(
        lambda: (
            backend.describe(record.current_processing_job).state.is_final
            and backend.describe(record.current_processing_job)
        ),
        what="the job to stop",
    )
    assert status.state is ProcessingState.STOPPED


def test_killing_a_deferred_task_stops_its_processing_job(s3, store, bucket, local_env):
    record, *_ = launch(s3, store, bucket, seconds_per_call=1.0)
    sensor = sensor_for(record.job_id, store)
    trigger = JobTrigger(record.job_id, store.table, "aws_default", "local", sensor.hook.backend("local").config())

    asyncio.run(trigger.on_kill())

    backend = sensor.hook.backend("local")
    wait_for(lambda: backend.describe(record.current_processing_job).state.is_final, what="the job to stop")
    assert backend.describe(record.current_processing_job).state is ProcessingState.STOPPED


def test_a_job_that_fails_before_its_script_writes_takes_the_backends_reason(s3, store, bucket, local_env):
    record, *_ = launch(s3, store, bucket, attempts=1)
    # The model vanishes before the runner downloads it: the job fails with nothing reported.
    s3.delete_object(Bucket=bucket, Key="models/paced.joblib")
    sensor = sensor_for(record.job_id, store)
    backend = sensor.hook.backend("local")
    deadline = time.monotonic() + 60
    while store.get_job(record.job_id).status is not JobStatus.FAILED:
        assert time.monotonic() < deadline
        settle_job(record.job_id, store, backend, S3ObjectStore(s3))
        time.sleep(0.2)
    final = store.get_job(record.job_id)
    assert backend.describe(record.current_processing_job).state is ProcessingState.FAILED
    assert f"processing job {record.current_processing_job} Failed" in final.error
    assert "models/paced.joblib" in final.error or "404" in final.error
    assert "6 file(s) have no result" in final.error
