"""Jobs whose owner is gone (a killed ``shardflow run``, an Airflow task that failed for good):
found and settled by whoever reads them next, so that none stays SUBMITTED or RUNNING forever.

An active job is an orphan once it has shown no sign of life (a heartbeat, else its last change)
for its heartbeat timeout and its processing job is not running. Settling it is the decision
:func:`~shardflow.core.lifecycle.settle_job` makes for the sensor, except that a processing job
that was stopped makes the job CANCELLED: someone stopped it, and no owner is left to resubmit.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from shardflow.core.lifecycle import file_counts, settle_job
from shardflow.core.ports import ComputeBackend, JobStorePort, ObjectStore, ProcessingState
from shardflow.core.record import JobRecord, JobStatus, parse_time
from shardflow.errors import JobConflict

__all__ = ["ORPHAN_SETTLER", "is_orphan_candidate", "settle_orphan", "settle_orphans"]

#: Who a cancelled orphan was stopped by, as its record says.
ORPHAN_SETTLER = "reconcile"


def is_orphan_candidate(record: JobRecord, now: datetime | None = None) -> bool:
    """Active, and silent (no heartbeat, else no change) for longer than its heartbeat timeout.
    Whether its processing job still runs is the backend's to say (:func:`settle_orphan`)."""
    if not record.status.is_active:
        return False
    last = record.heartbeat_at or record.updated_at
    if not last:
        return False
    silence = ((now or datetime.now(UTC)) - parse_time(last)).total_seconds()
    return silence > record.job.heartbeat_timeout_seconds


def settle_orphan(
    job_id: str, store: JobStorePort, backend: ComputeBackend, objects: ObjectStore, now: datetime | None = None
) -> JobRecord:
    """Settle the job if it is an orphan; return it as it is now.

    A processing job still running is left alone while it beats (its owner may be waiting for
    it) and stopped once silent, as the sensor would. One that ended or is unknown settles the
    job: SUCCEEDED if every file was done, CANCELLED if it was stopped, FAILED otherwise; a
    failed job keeps its attempts, so a retried owner may still resubmit it.

    :raises JobConflict: another reader settled the job first (read it again: it is settled).
    """
    record = store.get_job(job_id)
    if not is_orphan_candidate(record, now):
        return record
    name = record.current_processing_job
    status = backend.describe(name) if name else None
    if status is None or status.state is not ProcessingState.STOPPED:
        return settle_job(job_id, store, backend, objects)
    reason = (
        f"processing job {name} was stopped ({status.failure_reason or 'no reason given'}) and no owner "
        f"settled the job within its heartbeat timeout ({record.job.heartbeat_timeout_seconds} s)"
    )
    error = f"{reason}\n{record.error}" if record.error else reason
    counts = file_counts(store.list_files(job_id))
    return store.transition(record, JobStatus.CANCELLED, stopped_by=ORPHAN_SETTLER, error=error[:4000], **counts)


def settle_orphans(
    records: Sequence[JobRecord],
    store: JobStorePort,
    backend_for: Callable[[str], ComputeBackend],
    objects: ObjectStore,
    now: datetime | None = None,
) -> list[JobRecord]:
    """``records`` (a listing's page, say) with each orphan among them settled, in the same order.

    Only the orphan candidates cost a call to their backend. A job another reader changed
    meanwhile is read again and shown as it is.

    :param backend_for: the compute backend of a job, by the backend's name.
    """
    settled = []
    for record in records:
        if not is_orphan_candidate(record, now):
            settled.append(record)
            continue
        try:
            settled.append(settle_orphan(record.job_id, store, backend_for(record.backend), objects, now))
        except JobConflict:
            settled.append(store.get_job(record.job_id))
    return settled
