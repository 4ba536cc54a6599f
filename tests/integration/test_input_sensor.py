"""The input sensor and its trigger against a moto server: input that is there, input that lands
while the trigger polls, input that never lands, and a bucket that does not exist."""

from __future__ import annotations

import asyncio
import json
import threading
from datetime import UTC, datetime, timedelta

import pytest
from airflow.sdk.exceptions import AirflowFailException, TaskDeferred

from shardflow.airflow.sensors import InputSensor
from shardflow.airflow.triggers import InputTrigger

WHEN = datetime(2026, 3, 9, tzinfo=UTC)
CONTEXT = {"run_id": "scheduled__2026-03-09", "logical_date": WHEN}


def sensor(bucket: str, marker: str | None = "_SUCCESS", **kwargs) -> InputSensor:
    return InputSensor(
        task_id="wait_for_input",
        prefix=f"s3://{bucket}/events/dt={{{{ ds }}}}/",
        input_format="parquet",
        marker=marker,
        poke_interval=0.5,
        **kwargs,
    )


def first_event(trigger: InputTrigger, timeout: float = 60) -> dict:
    async def first() -> dict:
        async for event in trigger.run():
            return event.payload
        raise AssertionError("the trigger ended without an event")

    return asyncio.run(asyncio.wait_for(first(), timeout=timeout))


def test_input_already_there_passes_without_deferring(s3, bucket):
    s3.put_object(Bucket=bucket, Key="events/dt=2026-03-09/part-0000.parquet", Body=b"PAR1")
    s3.put_object(Bucket=bucket, Key="events/dt=2026-03-09/_SUCCESS", Body=b"")

    assert sensor(bucket, timeout=60).execute(CONTEXT) == f"s3://{bucket}/events/dt=2026-03-09/_SUCCESS"


def test_a_marker_that_lands_while_the_trigger_polls_fires_it(s3, bucket):
    s3.put_object(Bucket=bucket, Key="events/dt=2026-03-09/part-0000.parquet", Body=b"PAR1")  # not complete yet
    task = sensor(bucket, timeout=120)

    with pytest.raises(TaskDeferred) as deferred:
        task.execute(CONTEXT)

    trigger = deferred.value.trigger
    assert isinstance(trigger, InputTrigger) and deferred.value.method_name == "execute_complete"
    path, kwargs = trigger.serialize()
    assert path == "shardflow.airflow.triggers.InputTrigger"
    assert kwargs["prefix"] == f"s3://{bucket}/events/dt=2026-03-09/" and kwargs["marker"] == "_SUCCESS"
    assert "testing" not in json.dumps(kwargs)  # the connection's credentials never enter the trigger
    remaining = datetime.fromisoformat(kwargs["deadline"]) - datetime.now(UTC)
    assert timedelta(seconds=100) < remaining <= timedelta(seconds=120)
    rebuilt = InputTrigger(**kwargs)  # what a triggerer does, possibly another one
    landing = threading.Timer(2.0, s3.put_object, kwargs={"Bucket": bucket, "Key": "events/dt=2026-03-09/_SUCCESS"})
    landing.start()
    try:
        payload = first_event(rebuilt)
    finally:
        landing.join()

    assert payload == {"status": "arrived", "key": f"s3://{bucket}/events/dt=2026-03-09/_SUCCESS"}
    assert task.execute_complete(CONTEXT, payload) == payload["key"]


def test_without_a_marker_the_first_input_file_fires_the_trigger(s3, bucket):
    task = sensor(bucket, marker=None, timeout=120)
    with pytest.raises(TaskDeferred) as deferred:
        task.execute(CONTEXT)
    s3.put_object(Bucket=bucket, Key="events/dt=2026-03-09/_SUCCESS", Body=b"")  # a marker is not input
    s3.put_object(Bucket=bucket, Key="events/dt=2026-03-09/empty.parquet", Body=b"")
    landing = threading.Timer(
        1.5, s3.put_object, kwargs={"Bucket": bucket, "Key": "events/dt=2026-03-09/late/p.parquet", "Body": b"PAR1"}
    )
    landing.start()
    try:
        payload = first_event(deferred.value.trigger)
    finally:
        landing.join()
    assert payload == {"status": "arrived", "key": f"s3://{bucket}/events/dt=2026-03-09/late/p.parquet"}


def test_input_that_never_lands_fails_at_the_deadline_naming_the_prefix(s3, bucket):
    task = sensor(bucket, timeout=3)
    with pytest.raises(TaskDeferred) as deferred:
        task.execute(CONTEXT)

    started = datetime.now(UTC)
    payload = first_event(deferred.value.trigger)

    assert payload == {"status": "timeout"}
    assert timedelta(seconds=1.5) < datetime.now(UTC) - started < timedelta(seconds=10)
    with pytest.raises(AirflowFailException) as failed:  # fails for good: no Airflow retry
        task.execute_complete(CONTEXT, payload)
    assert (
        f"waited 3 s (input.wait.timeout_seconds) for the marker _SUCCESS under s3://{bucket}/events/dt=2026-03-09/"
        in str(failed.value)
    )


def test_a_poking_sensor_times_out_with_the_same_message(s3, bucket):
    task = sensor(bucket, marker=None, timeout=1.5, deferrable=False)
    with pytest.raises(
        AirflowFailException, match=rf"for a non-empty parquet file \(\.parquet, \.parq\) under s3://{bucket}/"
    ):
        task.execute(CONTEXT)


def test_a_missing_bucket_fails_at_once_on_the_worker_and_in_the_trigger(aws):
    with pytest.raises(AirflowFailException, match="bucket 'no-such-bucket-here' does not exist"):
        sensor("no-such-bucket-here", timeout=600).execute(CONTEXT)

    trigger = InputTrigger(
        prefix="s3://no-such-bucket-here/events/",
        input_format="parquet",
        marker=None,
        aws_conn_id="aws_default",
        deadline=(datetime.now(UTC) + timedelta(minutes=10)).isoformat(),
        poll_interval=0.5,
    )
    payload = first_event(trigger)
    assert payload["status"] == "error" and "bucket 'no-such-bucket-here' does not exist" in payload["message"]
    with pytest.raises(AirflowFailException, match="no-such-bucket-here"):
        sensor("no-such-bucket-here", timeout=600).execute_complete(CONTEXT, payload)
