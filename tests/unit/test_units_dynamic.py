"""Dynamic distribution's rules and the instance's claims, on the in-memory ports with real
Parquet and the real demo model: planning units, the predicted imbalance and ``auto``, claiming
with leases, fetching a split object's row groups, recording results under the fence, publishing."""

from __future__ import annotations

import hashlib
import io
import time
from dataclasses import replace
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError
from support.records import sample_job_spec

from shardflow.core.lifecycle import file_counts, submit_job
from shardflow.core.prepare import prepare_job
from shardflow.core.publish import publish_job
from shardflow.core.record import FileRecord, FileStatus, JobStatus
from shardflow.core.s3uri import S3Uri
from shardflow.core.units import (
    AUTO_THRESHOLD,
    Claim,
    UnitState,
    WorkUnit,
    choose_distribution,
    part_output,
    plan_units,
    predicted_imbalance,
    read_row_groups,
)
from shardflow.errors import PrepareError
from shardflow.local.demo_data import demo_dataset
from shardflow.processing.claims import UnitClaims
from shardflow.processing.messages import FileOutcome

INPUT, OUTPUT = S3Uri("shardflow-unit", "in/"), S3Uri("shardflow-unit", "out/")
CYCLE = (1, 2, 3, 5)


def test_dynamic_predicted_imbalance_of_sizes_that_cycle_with_the_key_order():
    sizes = [m * 1000 for m in CYCLE * 6]
    assert predicted_imbalance(sizes, 2) == pytest.approx(14 / 11)  # 1.27: 7 of every 11 to one
    assert predicted_imbalance(sizes, 4) == pytest.approx(20 / 11)  # 1.82: the 5x files to one
    assert predicted_imbalance([100] * 8, 4) == 1.0
    # One object on one instance, when dynamic could keep 4 busy with its parts: 4x.
    assert predicted_imbalance([4000], 1, ideal_instances=4) == 4.0


def test_dynamic_auto_chooses_by_the_threshold():
    assert choose_distribution("auto", AUTO_THRESHOLD + 0.01) == "dynamic"
    assert choose_distribution("auto", AUTO_THRESHOLD) == "sharded"
    assert choose_distribution("sharded", 3.0) == "sharded"
    assert choose_distribution("dynamic", 1.0) == "dynamic"


def test_dynamic_part_outputs_sit_beside_the_whole_objects_output():
    assert part_output("a/b.parquet", 3, 8) == "a/b.part-00003.parquet"
    assert part_output("a/b.parquet", 0, 1) == "a/b.parquet"
    assert part_output("day.csv", 12, 20) == "day.part-00012.csv"


def parquet(rows: int, row_group_size: int) -> tuple[pa.Table, bytes]:
    table = demo_dataset((rows,))["part-0000.parquet"]
    buffer = io.BytesIO()
    pq.write_table(table, buffer, row_group_size=row_group_size)
    return table, buffer.getvalue()


def test_dynamic_plan_cuts_only_big_objects_into_row_group_ranges(object_store):
    _, body = parquet(4_000, 250)  # 16 row groups
    uri = INPUT.join("big.parquet")
    object_store.put(uri, body)
    groups, footer = read_row_groups(object_store, uri, len(body))
    assert len(groups) == 16 and groups[0].start == 4 and groups[-1].end == footer
    files = [FileRecord("big.parquet", len(body)), FileRecord("small.parquet", 1_000)]
    units = plan_units(files, 2, {"big.parquet": (groups, footer)})
    parts = [u for u in units if u.key == "big.parquet"]
    assert len(parts) >= 4 and [u.part for u in parts] == list(range(len(parts)))
    assert sum(u.groups or 0 for u in parts) == 16  # every row group once, in order
    assert [u.first_group for u in parts] == sorted(u.first_group or 0 for u in parts)
    assert [u.key for u in units if u.parts == 1] == ["small.parquet"]
    assert [u.index for u in units] == list(range(len(units)))


def test_dynamic_a_file_that_is_not_parquet_is_named_when_its_footer_is_read(object_store):
    uri = INPUT.join("fake.parquet")
    object_store.put(uri, b"not a parquet file at all")
    with pytest.raises(PrepareError, match=r"fake\.parquet is not a Parquet file"):
        read_row_groups(object_store, uri, 25)


def test_dynamic_claimable_states():
    unit = WorkUnit(index=0, key="a", size=1, object_size=1)
    assert unit.claimable(1, now=100.0)
    leased = replace(unit, state=UnitState.LEASED, attempt=1, lease_until=150.0)
    assert not leased.claimable(1, now=100.0) and leased.claimable(1, now=151.0) and leased.claimable(2, now=100.0)
    assert not replace(unit, state=UnitState.DONE).claimable(2, now=1e12)
    failed = replace(unit, state=UnitState.FAILED, attempt=1)
    assert not failed.claimable(2, now=0) and not failed.claimable(1, now=0)


def test_dynamic_spec_refuses_split_objects_that_cannot_be_split():
    with pytest.raises(ValidationError, match="split_objects needs distribution dynamic or auto"):
        sample_job_spec(split_objects=True)
    with pytest.raises(ValidationError, match="cuts Parquet objects at their row groups"):
        sample_job_spec(split_objects=True, distribution="dynamic", input_format="csv")


@pytest.mark.parametrize(("multiples", "chosen"), [((1, 2, 3, 5) * 3, "dynamic"), ((2,) * 12, "sharded")])
def test_dynamic_auto_at_prepare_records_the_choice_and_the_predicted_imbalance(
    object_store, job_store, job_spec, demo_model, multiples, chosen
):
    object_store.put(S3Uri.parse(job_spec().model.uri), demo_model)
    for index, multiple in enumerate(multiples):
        table = demo_dataset((300 * multiple,))["part-0000.parquet"]
        buffer = io.BytesIO()
        pq.write_table(table, buffer)
        object_store.put(INPUT.join(f"day-{index:02d}.parquet"), buffer.getvalue())

    record = prepare_job(job_spec(distribution="auto", instance_count=2), job_store, object_store)

    assert record.distribution == chosen
    assert (record.predicted_imbalance > AUTO_THRESHOLD) == (chosen == "dynamic")
    assert len(job_store.list_units(record.job_id)) == (len(multiples) if chosen == "dynamic" else 0)


def test_dynamic_prepare_writes_a_unit_per_object_and_parts_for_a_split_one(object_store, job_store, backend, prepared):
    _, body = parquet(4_000, 250)
    object_store.put(INPUT.join("zz/big.parquet"), body)
    record = prepared(distribution="dynamic", split_objects=True, instance_count=2, run_id="manual__split")
    assert record.distribution == "dynamic"
    units = job_store.list_units(record.job_id)
    files = {f.key: f for f in job_store.list_files(record.job_id)}
    assert files["zz/big.parquet"].parts == len([u for u in units if u.key == "zz/big.parquet"]) > 1
    assert {u.key for u in units} == set(files)
    record = submit_job(record.job_id, job_store, backend)
    request = backend.requests[-1]
    assert request.dynamic and request.units == len(units) and request.instance_count == 2


def next_task(claims: UnitClaims, timeout: float = 5.0):
    """What the pool does: ask until a unit is ready, or the claims are finished (``None``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        task = claims.take()
        if task is not None or claims.finished:
            return task
        time.sleep(0.02)
    raise AssertionError("no unit became ready, and the claims never finished")


class Claimer:
    """One instance's claims on the in-memory store, with its own folders."""

    def __init__(self, job_store, object_store, record, tmp: Path, host: str, lease: float = 30.0) -> None:
        self.claims = UnitClaims(
            job_store,
            object_store,
            job_id=record.job_id,
            attempt=record.attempt,
            processing_job=record.current_processing_job,
            host=host,
            work_dir=tmp / host / "in",
            output_dir=tmp / host / "out",
            input_prefix=record.input_prefix,
            output_prefix=record.output_prefix,
            input_format="parquet",
            output_format="parquet",
            lease_seconds=lease,
        )
        self.output_dir = tmp / host / "out"

    def predict(self, task) -> FileOutcome:
        """Stand in for the worker: copy the unit's rows to its output (a real Parquet file)."""
        row_groups = range(task.row_groups[0], sum(task.row_groups)) if task.row_groups else None
        table = pq.ParquetFile(task.path).read_row_groups(row_groups) if row_groups else pq.read_table(task.path)
        target = self.output_dir / task.output
        target.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, target)
        sha = hashlib.sha256(target.read_bytes()).hexdigest()
        return FileOutcome(task.relative, task.size, output=task.output, rows=table.num_rows, sha256=sha)


@pytest.fixture
def dynamic_job(object_store, job_store, backend, prepared):
    def make(**changes):
        record = prepared(distribution="dynamic", instance_count=2, **changes)
        return submit_job(record.job_id, job_store, backend)

    return make


def test_dynamic_two_instances_claim_every_unit_once_biggest_first_and_publish(
    dynamic_job, job_store, object_store, tmp_path, tables
):
    record = dynamic_job()
    one, two = (Claimer(job_store, object_store, record, tmp_path, h) for h in ("algo-1", "algo-2"))
    sizes = []
    running = [one, two]
    while running:  # the two take turns, as two instances' workers would
        for claimer in list(running):
            task = next_task(claimer.claims)
            if task is None:
                running.remove(claimer)
                continue
            sizes.append(task.size)
            claimer.claims.finish(claimer.predict(task))
    for claimer in (one, two):
        claimer.claims.close()
    assert sizes[0] == max(sizes)  # the biggest first
    assert one.claims.stats.units + two.claims.stats.units == len(tables) == len(sizes)
    files = job_store.list_files(record.job_id)
    assert all(f.status is FileStatus.SUCCEEDED for f in files)
    assert sum(f.rows for f in files) == sum(t.num_rows for t in tables.values())
    job_store.heartbeat(record.job_id, record.attempt)
    record = job_store.get_job(record.job_id)
    record = job_store.transition(record, JobStatus.RUNNING)
    job_store.transition(record, JobStatus.SUCCEEDED, **file_counts(files))
    publish_job(record.job_id, job_store, object_store)
    for key, table in tables.items():
        published = pq.read_table(pa.BufferReader(object_store.read(OUTPUT.join(key))))
        assert published.column("id").to_pylist() == table.column("id").to_pylist()


def test_dynamic_a_split_objects_parts_read_only_their_row_groups(object_store, job_store, backend, prepared, tmp_path):
    table, body = parquet(4_000, 250)
    object_store.put(INPUT.join("zz/big.parquet"), body)
    record = prepared(distribution="dynamic", split_objects=True, instance_count=2, run_id="manual__parts")
    record = submit_job(record.job_id, job_store, backend)
    claimer = Claimer(job_store, object_store, record, tmp_path, "algo-1")
    reads: list[tuple[int, int]] = []
    real_read = object_store.read

    def counting(uri, start=None, end=None):
        if uri.key.endswith("big.parquet"):
            reads.append((start, end))
        return real_read(uri, start, end)

    object_store.read = counting  # type: ignore[method-assign]
    ids: dict[int, list[int]] = {}
    while (task := next_task(claimer.claims)) is not None:
        outcome = claimer.predict(task)
        if task.row_groups:
            unit_rows = pq.read_table(claimer.output_dir / task.output).column("id").to_pylist()
            ids[task.row_groups[0]] = unit_rows
        claimer.claims.finish(outcome)
    claimer.claims.close()
    assert [i for first in sorted(ids) for i in ids[first]] == table.column("id").to_pylist()
    (big,) = [f for f in job_store.list_files(record.job_id) if f.key == "zz/big.parquet"]
    assert big.status is FileStatus.SUCCEEDED and big.rows == 4_000 and big.parts == len(ids)
    assert sum(end - start + 1 for start, end in reads) < 1.5 * len(body)  # no part read the whole object


def test_dynamic_a_stale_claims_result_is_refused_and_the_new_claim_is_recorded(
    dynamic_job, job_store, object_store, tmp_path
):
    record = dynamic_job()
    stale = Claimer(job_store, object_store, record, tmp_path, "algo-1", lease=0.2)
    task = next_task(stale.claims)
    assert task is not None
    outcome = stale.predict(task)
    time.sleep(0.3)  # its lease runs out before it reports
    (unit,) = [u for u in job_store.list_units(record.job_id) if u.label == task.relative]
    assert (
        job_store.claim_unit(
            record.job_id, 1, unit.index, token="new", host="algo-2", lease_until=time.time() + 60, now=time.time()
        )
        is Claim.OK
    )
    stale.claims.finish(outcome)
    stale.claims._results.shutdown(wait=True)
    assert stale.claims.stats.refused == [task.relative]
    stored = job_store.get_units(record.job_id, [unit.index])[0]
    assert stored.state is UnitState.LEASED and stored.token == "new"
    (file,) = [f for f in job_store.list_files(record.job_id) if f.key == unit.key]
    assert file.status is FileStatus.PENDING


def test_dynamic_fields_are_new_in_version_2_and_a_version_1_record_reads_as_sharded():
    from shardflow.aws.job_items import job_from_item, job_item
    from shardflow.core.record import JobRecord
    from shardflow.errors import ShardflowError

    spec = sample_job_spec(distribution="dynamic", lease_seconds=30)
    assert spec.version == 2
    old = spec.model_dump(mode="json")
    old["version"] = 1
    for field in ("distribution", "split_objects", "lease_seconds"):
        del old["compute"][field]
    item = job_item(JobRecord(job_id="j-1", job=spec))
    item["job"] = {"M": job_item(JobRecord(job_id="j-1", job=spec))["job"]["M"] | {"version": {"N": "1"}}}
    item["job"]["M"]["compute"]["M"] = {
        k: v for k, v in item["job"]["M"]["compute"]["M"].items() if k in old["compute"]
    }
    read = job_from_item(item)
    assert read.job.version == 1 and read.job.compute.distribution == "sharded" and not read.dynamic
    item["job"]["M"]["version"] = {"N": "3"}
    with pytest.raises(
        ShardflowError, match="written with job description version 3; this Shardflow reads versions 1, 2"
    ):
        job_from_item(item)


def test_dynamic_a_resubmission_asks_instances_only_for_the_units_left(
    object_store, job_store, backend, prepared, tables
):
    _, body = parquet(4_000, 250)
    object_store.put(INPUT.join("zz/big.parquet"), body)
    record = prepared(distribution="dynamic", split_objects=True, instance_count=4, run_id="manual__retry")
    record = submit_job(record.job_id, job_store, backend)
    units = job_store.list_units(record.job_id)
    big = [u for u in units if u.key == "zz/big.parquet"]
    # Every unit done but the split file's last part; that file has no result yet.
    for unit in units:
        if unit.index != big[-1].index:
            job_store._units[record.job_id][unit.index] = replace(unit, state=UnitState.DONE)
    done = [replace(f, status=FileStatus.SUCCEEDED) for f in job_store.list_files(record.job_id) if f.key in tables]
    job_store.record_file_results(record.job_id, done, attempt=1)
    record = job_store.transition(job_store.get_job(record.job_id), JobStatus.FAILED, error="one part lost")

    record = submit_job(record.job_id, job_store, backend)

    request = backend.requests[-1]
    assert [k.rsplit("/", 1)[-1] for k in request.input_keys] == ["big.parquet"]
    assert request.units == 1 and request.instance_count == 1 and record.attempts[-1].instance_count == 1
