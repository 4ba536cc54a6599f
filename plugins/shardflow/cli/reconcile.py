"""``shardflow jobs reconcile``: settle every job whose owner is gone (a killed ``shardflow run``,
an Airflow task that failed for good), so that no job stays SUBMITTED or RUNNING forever."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from typing import TYPE_CHECKING

from shardflow.core.record import JobRecord, JobStatus

if TYPE_CHECKING:
    from shardflow.aws.jobstore import JobStore
    from shardflow.core.ports import ComputeBackend

__all__ = ["active_jobs", "reconcile"]


def active_jobs(store: JobStore, pipeline: str | None = None) -> Iterator[JobRecord]:
    """Every SUBMITTED or RUNNING job (of ``pipeline``), page after page of the ``by_status`` index."""
    from shardflow.aws.job_queries import JobQuery

    for status in (JobStatus.SUBMITTED, JobStatus.RUNNING):
        cursor = None
        while True:
            page = store.query_jobs(JobQuery(pipeline=pipeline, status=status, limit=200, cursor=cursor))
            yield from page.jobs
            cursor = page.cursor
            if cursor is None:
                break


def reconcile(store: JobStore, pipeline: str | None = None) -> list[tuple[JobRecord, JobRecord]]:
    """Settle the orphans among the active jobs; returns ``(before, after)`` of each job checked."""
    import boto3

    from shardflow.aws.s3 import S3ObjectStore
    from shardflow.compute import get_backend
    from shardflow.core.orphans import settle_orphans

    backends: dict[str, ComputeBackend] = {}

    def backend_for(name: str) -> ComputeBackend:
        if name not in backends:
            backends[name] = get_backend(name)
        return backends[name]

    before = list(active_jobs(store, pipeline))
    after = settle_orphans(before, store, backend_for, S3ObjectStore(boto3.client("s3")))
    return list(zip(before, after, strict=True))


def run_reconcile(args: argparse.Namespace, store: JobStore) -> int:
    checked = reconcile(store, args.pipeline)
    settled = [(b, a) for b, a in checked if a.status != b.status]
    if args.json:
        print(
            json.dumps(
                {
                    "checked": len(checked),
                    "settled": [
                        {"job_id": a.job_id, "was": str(b.status), "status": str(a.status), "error": a.error}
                        for b, a in settled
                    ],
                },
                indent=2,
            )
        )
        return 0
    for before, after in settled:
        why = (after.error or "").splitlines()[0] if after.error else "every file done"
        print(f"job {after.job_id}: {before.status} -> {after.status}: {why}")
    print(
        f"{len(checked)} active job(s) checked in table {store.table}, {len(settled)} settled; "
        "the others are running or still within their heartbeat timeout"
    )
    return 0
