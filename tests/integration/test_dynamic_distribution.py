"""Dynamic distribution on real jobs: a moto server, the local backend's instances claiming units
from the DynamoDB job record, real Parquet and a real model. Every test publishes and reads the
outputs back, comparing each row's prediction with ``model.predict``."""

from __future__ import annotations

import io
import json
import os
import signal
import time
from dataclasses import replace

import joblib
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from support.jobs import launch, script_pids, sensor_for, wait_for, wait_until_decided

from shardflow.aws.s3 import S3ObjectStore
from shardflow.core.lifecycle import stop_job
from shardflow.core.publish import publish_job
from shardflow.core.record import FileStatus, JobStatus
from shardflow.core.units import Claim, UnitState
from shardflow.local.demo_data import DEMO_FEATURES, demo_dataset, upload_dataset

#: Sizes that cycle 1x/2x/3x/5x in key order: dealt out over 2 instances in key order, one gets 2.7x
#: the other's rows.
UNEVEN = tuple(400 * m for m in (1, 2, 3, 5) * 3)


def published_rows(s3, bucket: str, tables: dict[str, pa.Table], model_bytes: bytes) -> dict:
    """Check the published prefix: every input row exactly once, predicted as the model predicts
    it; returns the manifest."""
    manifest = json.loads(s3.get_object(Bucket=bucket, Key="out/_manifest.json")["Body"].read())
    outputs = []
    for entry in manifest["files"]:
        body = s3.get_object(Bucket=bucket, Key="out/" + entry["output"])["Body"].read()
        outputs.append(pq.read_table(pa.BufferReader(body)))
    predicted = pa.concat_tables(outputs)
    ids = predicted.column("id").to_numpy()
    expected = pa.concat_tables(list(tables.values()))
    assert len(ids) == len(set(ids.tolist())), "a row was predicted more than once"
    assert sorted(ids) == sorted(expected.column("id").to_numpy()), "a row is missing"
    model = joblib.load(io.BytesIO(model_bytes)).model
    source = expected.to_pandas().set_index("id").loc[ids]
    np.testing.assert_array_equal(predicted.column("prediction").to_numpy(), model.predict(source[DEMO_FEATURES]))
    assert manifest["rows"] == expected.num_rows
    return manifest


def test_dynamic_distribution_predicts_every_row_of_uneven_files_once(s3, store, bucket, local_env):
    tables = demo_dataset(UNEVEN)
    upload_dataset(s3, f"s3://{bucket}/in/", tables)
    record, tables, model = launch(
        s3, store, bucket, tables=tables, seconds_per_call=0.05, instances=2, distribution="dynamic"
    )
    assert record.distribution == "dynamic" and record.predicted_imbalance is not None

    wait_until_decided(record.job_id, store)
    publish_job(record.job_id, store, S3ObjectStore(s3))

    final = store.get_job(record.job_id)
    assert final.status is JobStatus.SUCCEEDED and final.attempt == 1
    assert final.attempts[0].instance_count == 2
    units = store.list_units(record.job_id)
    assert len(units) == len(tables) and all(u.state is UnitState.DONE for u in units)
    assert {u.host for u in units} == {"algo-1", "algo-2"}  # both instances claimed work
    published_rows(s3, bucket, tables, model)
    # Each input keeps its usual output key; nothing of the job is left in staging.
    manifest = json.loads(s3.get_object(Bucket=bucket, Key="out/_manifest.json")["Body"].read())
    assert sorted(e["output"] for e in manifest["files"]) == sorted(tables)
    assert not s3.list_objects_v2(Bucket=bucket, Prefix="out/_staging/").get("KeyCount")


def test_dynamic_distribution_splits_a_big_parquet_object_into_row_group_parts(s3, store, bucket, local_env):
    table = demo_dataset((6_000,))["part-0000.parquet"]
    buffer = io.BytesIO()
    pq.write_table(table, buffer, row_group_size=500)  # 12 row groups
    s3.put_object(Bucket=bucket, Key="in/big/day.parquet", Body=buffer.getvalue())
    tables = {"big/day.parquet": table}
    record, tables, model = launch(
        s3,
        store,
        bucket,
        tables=tables,
        seconds_per_call=0.05,
        instances=2,
        distribution="dynamic",
        split_objects=True,
    )
    (file,) = store.list_files(record.job_id)
    assert file.parts > 1

    wait_until_decided(record.job_id, store)
    publish_job(record.job_id, store, S3ObjectStore(s3))

    final = store.get_job(record.job_id)
    assert final.status is JobStatus.SUCCEEDED and final.attempts[0].instance_count == 2
    (file,) = store.list_files(record.job_id)
    assert file.status is FileStatus.SUCCEEDED and file.rows == 6_000
    manifest = published_rows(s3, bucket, tables, model)
    outputs = [e["output"] for e in manifest["files"]]
    assert outputs == [f"big/day.part-{i:05d}.parquet" for i in range(file.parts)]  # listed in order
    # The parts, read in the manifest's order, are the input's rows in order.
    ids = pa.concat_tables(
        pq.read_table(pa.BufferReader(s3.get_object(Bucket=bucket, Key="out/" + o)["Body"].read())) for o in outputs
    ).column("id")
    assert ids.to_pylist() == table.column("id").to_pylist()


def test_dynamic_distribution_reclaims_a_killed_instances_unit_in_the_same_attempt(s3, store, bucket, local_env):
    """kill -9 of one instance: its unit's lease runs out and the other instance claims it; the job
    succeeds in its first attempt with every row once."""
    tables = demo_dataset(UNEVEN)
    upload_dataset(s3, f"s3://{bucket}/in/", tables)
    record, tables, model = launch(
        s3, store, bucket, tables=tables, seconds_per_call=0.5, instances=2, distribution="dynamic", lease_seconds=5
    )
    job_dir = local_env / record.current_processing_job
    (pid,) = wait_for(lambda: script_pids(job_dir, "algo-2"), what="instance algo-2")
    held = wait_for(
        lambda: [u for u in store.list_units(record.job_id) if u.host == "algo-2" and u.state is UnitState.LEASED],
        what="algo-2 to claim a unit",
    )
    os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()

    wait_until_decided(record.job_id, store, timeout=240)
    publish_job(record.job_id, store, S3ObjectStore(s3))

    final = store.get_job(record.job_id)
    assert final.status is JobStatus.SUCCEEDED and final.attempt == 1
    # Progress is counted in the same write as each result: the killed instance's finished units count.
    assert final.attempts[0].files_done == len(tables)
    assert final.attempts[0].rows == sum(t.num_rows for t in tables.values())
    retaken = {u.index: u for u in store.list_units(record.job_id)}[held[0].index]
    assert retaken.state is UnitState.DONE and retaken.host == "algo-1" and retaken.claims == 2
    assert time.monotonic() - killed >= 5  # the lease had to run out first
    assert "instance algo-2 was killed by signal 9" in (job_dir / "status.json").read_text()
    published_rows(s3, bucket, tables, model)


def test_dynamic_distribution_refuses_a_stale_claims_late_result(s3, store, bucket, local_env):
    """An instance whose lease ran out (frozen, not dead) finishes late: its result is refused once
    another claim holds the unit, and every claim is refused once the attempt is over."""
    tables = demo_dataset((300, 200))
    upload_dataset(s3, f"s3://{bucket}/in/", tables)
    record, _, _ = launch(
        s3, store, bucket, tables=tables, seconds_per_call=2.0, instances=1, distribution="dynamic", lease_seconds=5
    )
    job_dir = local_env / record.current_processing_job
    (pid,) = wait_for(lambda: script_pids(job_dir, "algo-1"), what="the instance")
    unit = wait_for(
        lambda: [u for u in store.list_units(record.job_id) if u.state is UnitState.LEASED], what="a claim"
    )[0]
    os.kill(pid, signal.SIGSTOP)  # frozen: it renews nothing
    try:
        wait_for(
            lambda: store.list_units(record.job_id)[unit.index].lease_until < time.time(),
            timeout=15,
            what="the lease to run out",
        )
        now = time.time()
        taken = store.claim_unit(record.job_id, 1, unit.index, token="B", host="other", lease_until=now + 60, now=now)
        assert taken is Claim.OK
        late = replace(unit, state=UnitState.DONE, staged="x", output="x.parquet", rows=300, sha256="0" * 64)
        assert store.finish_unit(record.job_id, 1, late) is Claim.TAKEN  # the stale claim's result
        stored = store.list_units(record.job_id)[unit.index]
        assert stored.state is UnitState.LEASED and stored.token == "B" and stored.claims == 2
    finally:
        os.kill(pid, signal.SIGKILL)
        os.kill(pid, signal.SIGCONT)
    # Once the attempt has ended, no claim nor result of it counts.
    stop_job(record.job_id, store, sensor_for(record.job_id, store).hook.backend("local"), by="test")
    assert store.get_job(record.job_id).status is JobStatus.CANCELLED
    now = time.time()
    other = store.list_units(record.job_id)[1 - unit.index]
    claimed = store.claim_unit(record.job_id, 1, other.index, token="C", host="late", lease_until=now + 60, now=now)
    assert claimed is Claim.FENCED
    assert store.finish_unit(record.job_id, 1, replace(late, token="B")) is Claim.FENCED
