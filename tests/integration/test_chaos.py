"""Chaos on the local backend: eight ``shardflow run`` jobs at once while random ``kill -9`` hit
their workers, runners and the commands themselves (a killed command is rerun, as a user would,
with ``--overwrite``). At the end no job is left SUBMITTED or RUNNING, no process of any job is
alive, every published prefix is exactly its ``_manifest.json`` (keys and sha256), and every input
row is predicted exactly once there.

Depends on the committer (core/publish.py: staging, ``_manifest.json`` with a ``files`` list of
``input``, ``output``, ``rows`` and ``sha256``); the check reads the manifest as publish writes it.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import time
from collections import Counter
from pathlib import Path

import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pytest
from support.cli_runs import job_processes, run_spec, start_run, started_at, wait_dead
from support.models import paced_model_bytes

from shardflow.cli.reconcile import active_jobs, reconcile
from shardflow.core.staging import is_visible
from shardflow.local.demo_data import demo_dataset

JOBS = 8
ROWS = (300, 200, 250, 150)
#: How long faults are injected (seconds), and how many reruns of a killed command each job gets.
CHAOS_SECONDS = 60
RERUNS = 2
SEED = int(os.environ.get("SHARDFLOW_CHAOS_SEED", "15"))


def all_job_dirs(root: Path) -> list[Path]:
    return [d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")] if root.exists() else []


def published_prefix_matches_manifest(s3, bucket: str, prefix: str, ids: list[int]) -> int:
    """Assert that readers see exactly the manifest's objects, with its sha256s, and every id once;
    returns the rows checked."""
    manifest = json.loads(s3.get_object(Bucket=bucket, Key=prefix + "_manifest.json")["Body"].read())
    listed = {entry["output"]: entry for entry in manifest["files"]}
    visible = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            relative = obj["Key"][len(prefix) :]
            if is_visible(relative):
                visible[relative] = obj["Key"]
    assert set(visible) == set(listed), f"{prefix}: readers see {sorted(visible)}, the manifest lists {sorted(listed)}"
    for relative, key in visible.items():
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        assert hashlib.sha256(body).hexdigest() == listed[relative]["sha256"], f"{key} differs from its manifest"
    endpoint = os.environ["AWS_ENDPOINT_URL"]
    fs = pafs.S3FileSystem(endpoint_override=endpoint, scheme="http", region="us-east-1")
    table = ds.dataset(f"{bucket}/{prefix}", format="parquet", filesystem=fs).to_table(columns=["id"])
    predicted = sorted(table.column("id").to_pylist())
    assert predicted == sorted(ids), f"{prefix}: rows lost or duplicated"
    assert manifest["rows"] == len(ids)
    return len(predicted)


@pytest.mark.timeout(600)
def test_chaos_eight_jobs_under_random_kill_9_end_settled_and_published_exactly(
    s3, bucket, store, local_env, tmp_path, capsys
):
    rng = random.Random(SEED)
    model = paced_model_bytes(0.3)
    names = [f"chaos-{i}" for i in range(JOBS)]
    tables = {name: demo_dataset(ROWS, seed=i) for i, name in enumerate(names)}
    settings = {"instances": 1, "heartbeat_timeout": 30, "attempts": 4}
    specs = {name: run_spec(tmp_path, name, bucket, model, tables[name], s3=s3, **settings) for name in names}
    logs = {name: tmp_path / f"{name}.log" for name in names}
    clis = {name: start_run(specs[name], store.table, logs[name]) for name in names}
    reruns: Counter[str] = Counter()
    faults: Counter[str] = Counter()
    every_process: set[tuple[int, int | None]] = set()  # (pid, start time): one process, even if its pid is reused

    started = time.monotonic()
    try:
        while time.monotonic() - started < CHAOS_SECONDS and any(c.poll() is None for c in clis.values()):
            time.sleep(rng.uniform(0.5, 2.0))
            processes = [job_processes(d) for d in all_job_dirs(local_env)]
            every_process |= {(pid, started_at(pid)) for p in processes for group in p.values() for pid in group}
            kind = rng.choice(["worker", "worker", "runner", "cli"])
            if kind == "cli":
                live = [n for n, c in clis.items() if c.poll() is None and reruns[n] < RERUNS]
                if not live:
                    continue
                name = rng.choice(live)
                os.kill(clis[name].pid, signal.SIGKILL)
                clis[name].wait()
                reruns[name] += 1
                clis[name] = start_run(specs[name], store.table, logs[name], "--overwrite")
            else:
                victims = [pid for p in processes for pid in p[kind + "s" if kind == "worker" else kind]]
                if not victims:
                    continue
                try:
                    os.kill(rng.choice(victims), signal.SIGKILL)
                except ProcessLookupError:
                    continue
            faults[kind] += 1

        codes = {name: cli.wait(timeout=300) for name, cli in clis.items()}
    finally:
        for cli in clis.values():
            if cli.poll() is None:
                cli.kill()

    # No process of any job outlives the commands: checked by PID.
    for job_dir in all_job_dirs(local_env):
        every_process |= {(pid, started_at(pid)) for group in job_processes(job_dir).values() for pid in group}
    left = [(pid, born) for pid, born in every_process if born is not None and started_at(pid) == born]
    assert wait_dead([pid for pid, _ in left], timeout=20) == [], "processes outlived their jobs"

    # Every job a killed command left behind is settled by reconcile once its heartbeat timeout passes.
    deadline = time.monotonic() + 120
    while list(active_jobs(store)):
        assert time.monotonic() < deadline, f"still active: {[j.job_id for j in active_jobs(store)]}"
        reconcile(store)
        time.sleep(2)
    jobs = [job for name in names for job in store.list_jobs(pipeline=name, limit=50)]
    statuses = Counter(str(job.status) for job in jobs)
    assert set(statuses) <= {"SUCCEEDED", "FAILED", "CANCELLED"}, statuses

    rows_checked = 0
    published = 0
    for name in names:
        prefix = f"{name}/out/dt=2026-03-09/"
        if "Contents" not in s3.list_objects_v2(Bucket=bucket, Prefix=prefix + "_SUCCESS"):
            assert codes[name] != 0, f"{name}: the command said it published, but there is no _SUCCESS"
            continue
        published += 1
        ids = [i for table in tables[name].values() for i in table.column("id").to_pylist()]
        rows_checked += published_prefix_matches_manifest(s3, bucket, prefix, ids)
    assert published >= JOBS // 2, f"only {published} of {JOBS} pipelines published: {statuses}"

    with capsys.disabled():
        print(
            f"\nchaos (seed {SEED}): {sum(faults.values())} faults injected ({dict(faults)}), "
            f"{len(jobs)} jobs ({dict(statuses)}), {sum(reruns.values())} reruns, "
            f"{published} prefixes published, {rows_checked} rows checked, {time.monotonic() - started:.0f} s"
        )
