"""What a run may do when it is not the first: which job record its plan goes to, and whether
its output prefix is free: who holds it (the job its ``_manifest.json`` names) and what readers
see there (docs/outputs.md#reruns).

A task retry or a cleared run with the same spec finds its job and goes on with the plan the
record keeps. A cleared run whose spec has changed since (another model, prefix, setting...) is a
new job of that run, ``<job id>-r2``, ``-r3``...: its plan is the new spec's, never a mix of both.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from shardflow.core.job import JobSpec
from shardflow.core.planning import job_id_for_run
from shardflow.core.ports import JobStorePort, ObjectStore
from shardflow.core.record import JobRecord, JobStatus
from shardflow.core.s3uri import S3Uri
from shardflow.core.staging import MANIFEST, SUCCESS, is_visible
from shardflow.errors import JobNotFound, ObjectNotFound, PrepareError

__all__ = [
    "OVERWRITE_ADVICE",
    "Occupant",
    "check_output_free",
    "newest_job_of_run",
    "occupant",
    "plan_for_run",
    "spec_changes",
]

#: A run's jobs after the first: ``<job id>-r<N>``.
_GENERATION = "-r"


def plan_for_run(job: JobSpec, store: JobStorePort) -> tuple[str, JobRecord | None]:
    """The job id this run's ``job`` is prepared as, and its record when it has one already.

    :raises PrepareError: the run's newest job was prepared from another spec and has not ended:
        it must be stopped (or finish) before the new spec can run.
    """
    first = job_id_for_run(job.pipeline, job.dag_id, job.run_id)
    newest, generation = _newest(first, store)
    if newest is None:
        return first, None
    changes = spec_changes(newest.job, job)
    if not changes:
        return newest.job_id, newest
    if newest.status not in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED):
        raise PrepareError(
            f"job {newest.job_id} of run {job.run_id} is {newest.status} with the spec it was prepared from, "
            f"which differs from today's in {', '.join(changes)}: stop it (shardflow jobs stop {newest.job_id}) "
            "or let it end, then clear the run again to run the new spec"
        )
    return f"{first}{_GENERATION}{generation + 1}", None


def newest_job_of_run(pipeline: str, dag_id: str, run_id: str, store: JobStorePort) -> JobRecord | None:
    """The run's newest job (``-r2`` after a rerun with a changed spec), or ``None`` if it has none."""
    return _newest(job_id_for_run(pipeline, dag_id, run_id), store)[0]


def _newest(first: str, store: JobStorePort) -> tuple[JobRecord | None, int]:
    """The newest of the jobs ``first``, ``first-r2``, ``first-r3``... and its generation (0: none)."""
    newest: JobRecord | None = None
    generation = 0
    while True:
        job_id = first if generation == 0 else f"{first}{_GENERATION}{generation + 1}"
        try:
            newest = store.get_job(job_id)
        except JobNotFound:
            return newest, generation
        generation += 1


def spec_changes(old: JobSpec, new: JobSpec) -> list[str]:
    """The dotted names of the settings that differ between two descriptions of a job."""
    return sorted(_differences(old.model_dump(mode="json"), new.model_dump(mode="json"), ""))


def _differences(old: Any, new: Any, where: str) -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        found: list[str] = []
        for key in old.keys() | new.keys():
            found += _differences(old.get(key), new.get(key), f"{where}.{key}" if where else key)
        return found
    return [] if old == new else [where]


def check_output_free(job_id: str, job: JobSpec, objects: ObjectStore) -> None:
    """Refuse, before anything runs, a job whose output prefix holds another job's published
    outputs, unless it says ``output.overwrite`` (publish checks again, as the prefix may change).

    :raises PrepareError: naming the job that holds the prefix, and what to do.
    """
    if job.output.overwrite:
        return
    refusal = occupant(job.output.prefix, objects).refusal(job_id)
    if refusal:
        raise PrepareError(f"{refusal}; {OVERWRITE_ADVICE}")


@dataclass(frozen=True)
class Occupant:
    """What an output prefix holds now.

    :param job_id: the job its ``_manifest.json`` names (``None`` without one).
    :param visible: the keys a reader lists, relative to the prefix, in key order.
    :param marked: whether ``_SUCCESS`` is there.
    """

    prefix: S3Uri
    job_id: str | None
    visible: tuple[str, ...]
    marked: bool

    def refusal(self, job_id: str) -> str | None:
        """Why job ``job_id`` may not publish here without ``overwrite``, or ``None`` if it may."""
        if self.job_id not in (None, job_id):
            return (
                f"output prefix {self.prefix} holds the published outputs of job {self.job_id} "
                f"({len(self.visible)} object(s) readers see)"
            )
        if self.job_id is None and self.visible:
            return (
                f"output prefix {self.prefix} holds {len(self.visible)} object(s) no Shardflow job published, "
                f"e.g. {self.visible[0]}"
            )
        return None


#: What a refused run is told to do.
OVERWRITE_ADVICE = (
    "to replace them, set output.overwrite: true in the pipeline spec (the trigger form's overwrite, "
    "or shardflow run --overwrite); otherwise write to another output prefix"
)


def occupant(output_prefix: str, objects: ObjectStore) -> Occupant:
    """Read who holds ``output_prefix``: one listing, and ``_manifest.json`` when it is there."""
    prefix = S3Uri.parse(output_prefix).as_prefix()
    keys = [o.key[len(prefix.key) :] for o in objects.list(prefix)]
    owner = None
    if MANIFEST in keys:
        try:
            owner = str(json.loads(objects.read(prefix.join(MANIFEST)))["job_id"])
        except (ObjectNotFound, ValueError, KeyError, TypeError):
            owner = "(unknown: its _manifest.json cannot be read)"
    return Occupant(prefix, owner, tuple(k for k in keys if is_visible(k)), SUCCESS in keys)
