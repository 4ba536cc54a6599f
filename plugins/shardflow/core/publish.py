"""The last step of a job, the committer: check that the staged outputs list every input exactly
once, promote them from the attempts' staging folders to the keys readers see with server-side
copies whose SHA-256 must match the manifests, then mark the prefix with ``_manifest.json`` and
``_SUCCESS`` and clear the job's staging (docs/outputs.md).

Processing jobs only ever write to staging, so nothing a stale attempt, an orphaned process or a
late SageMaker upload does can change what publish promoted.
"""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any

from shardflow.core.keys import check_relative
from shardflow.core.lifecycle import summarize
from shardflow.core.ports import JobStorePort, ObjectStore
from shardflow.core.record import FileRecord, FileStatus, JobRecord, JobStatus
from shardflow.core.reruns import OVERWRITE_ADVICE, Occupant, occupant
from shardflow.core.s3uri import S3Uri
from shardflow.core.staging import MANIFEST, SUCCESS, attempt_of, attempt_staging, job_staging
from shardflow.core.units import UnitState, WorkUnit
from shardflow.errors import ObjectExists, PublishError, UnsafeKey

__all__ = ["COPIES_AT_ONCE", "Promotion", "publish_job", "staged_outputs"]

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
#: Copies in flight at once. A CopyObject waits on S3 for as long as the copy takes, so one at a
#: time leaves publish bound by latency: see bench/RESULTS-promotion.md.
COPIES_AT_ONCE = 16


@dataclass(frozen=True)
class Promotion:
    """One output: where its attempt staged it, where readers will find it, and its manifest entry."""

    source: S3Uri
    target: S3Uri
    entry: dict[str, Any]


def publish_job(job_id: str, store: JobStorePort, objects: ObjectStore) -> dict[str, Any]:
    """Verify and promote the job's staged outputs, then write ``_manifest.json`` and ``_SUCCESS``.

    Safe to run again after a failure half-way: the prefix is claimed by writing the manifest
    first, and a claim of this job's own is resumed.

    :raises PublishError: the job has not succeeded, its staged outputs do not match its record,
        the prefix holds another job's outputs and the job does not say ``output.overwrite``, or
        something else wrote to the prefix while it was published.
    """
    record = store.get_job(job_id)
    if record.status is not JobStatus.SUCCEEDED:
        raise PublishError(f"job {job_id} is {record.status}, not SUCCEEDED: nothing to publish")
    held = occupant(record.output_prefix, objects)
    if held.job_id == job_id and held.marked:  # published already: a cleared publish task
        _clear_staging(record, objects)
        return summarize(record)
    units = store.list_units(job_id) if record.dynamic else None
    promotions = staged_outputs(record, store.list_files(job_id), objects, units)
    manifest = {
        "job_id": job_id,
        "model": record.artifact.model_dump(exclude_none=True),
        "files": [p.entry for p in sorted(promotions, key=lambda p: p.entry["input"])],
        "rows": sum(p.entry["rows"] for p in promotions),
    }
    if held.job_id != job_id:
        _claim(record, held, json.dumps(manifest, indent=1).encode(), objects)
    present = set(held.visible)
    existing = {held.prefix.join(key).key for key in present}
    _promote_all(job_id, promotions, objects, existing)
    new = {p.entry["output"] for p in promotions}
    stale = sorted(present - new)
    if stale and record.job.output.overwrite:
        objects.delete_objects(held.prefix.join(key) for key in stale)
    after = occupant(record.output_prefix, objects)
    strangers = sorted(set(after.visible) - new)
    if after.job_id != job_id or strangers:
        raise PublishError(
            f"job {job_id}: while it published to {held.prefix}, "
            + (f"job {after.job_id} claimed the prefix" if after.job_id != job_id else "")
            + (f"{len(strangers)} object(s) not in its manifest appeared, e.g. {strangers[0]}" if strangers else "")
            + "; only one job may publish to a prefix at a time: rerun the publish task once the other is done"
        )
    objects.put(held.prefix.join(SUCCESS), b"")
    _clear_staging(record, objects)
    return summarize(record)


def _clear_staging(record: JobRecord, objects: ObjectStore) -> None:
    """Delete what every attempt of the job staged (a late upload afterwards lands there again,
    where no reader looks)."""
    staging = job_staging(record.output_prefix, record.job_id)
    objects.delete_objects([S3Uri(staging.bucket, o.key) for o in objects.list(staging)])


def _claim(record: JobRecord, held: Occupant, manifest: bytes, objects: ObjectStore) -> None:
    """Take the prefix for this job by writing its manifest, before anything is promoted: a
    publish that dies half-way leaves the prefix claimed (without ``_SUCCESS``) and is resumed."""
    refusal = held.refusal(record.job_id)
    overwrite = record.job.output.overwrite
    if refusal and not overwrite:
        raise PublishError(f"job {record.job_id}: {refusal}; {OVERWRITE_ADVICE}")
    if held.marked:  # from here until the new set is complete, the prefix is not marked complete
        objects.delete_objects([held.prefix.join(SUCCESS)])
    try:
        objects.put(held.prefix.join(MANIFEST), manifest, create_only=held.job_id is None)
    except ObjectExists:
        raise PublishError(
            f"job {record.job_id}: another job claimed {held.prefix} while this one was about to publish; "
            "rerun the publish task to read who holds it now"
        ) from None


def _promote_all(job_id: str, promotions: list[Promotion], objects: ObjectStore, existing: set[str]) -> None:
    """Promote every output, :data:`COPIES_AT_ONCE` at a time; the first failure stops the rest."""
    with ThreadPoolExecutor(max_workers=COPIES_AT_ONCE, thread_name_prefix="promote") as pool:
        futures = [
            pool.submit(_promote, job_id, p, objects, create_only=p.target.key not in existing) for p in promotions
        ]
        try:
            for future in as_completed(futures):
                future.result()
        except BaseException:
            pool.shutdown(cancel_futures=True)
            raise


def _promote(job_id: str, promotion: Promotion, objects: ObjectStore, *, create_only: bool) -> None:
    """Copy one output to the key readers see, and check that the copy is the manifest's bytes."""
    try:
        sha256 = objects.copy(promotion.source, promotion.target, create_only=create_only)
    except ObjectExists:
        raise PublishError(
            f"job {job_id}: {promotion.target} was written by someone else while this job published; "
            "rerun the publish task to read who holds the prefix now"
        ) from None
    if sha256 != promotion.entry["sha256"]:
        if create_only:
            objects.delete_objects([promotion.target])
        raise PublishError(
            f"job {job_id}: {promotion.source} has sha256 {sha256}, but its manifest says "
            f"{promotion.entry['sha256']}: the staged output is not what its attempt wrote; nothing more "
            "was published. Clear the job's wait task to predict the file again"
        )


def staged_outputs(
    record: JobRecord, files: list[FileRecord], objects: ObjectStore, units: list[WorkUnit] | None = None
) -> list[Promotion]:
    """Each input's output, from the staging of the attempt the record credits it to, checked
    against the record: every input exactly once, every output staged, the rows adding up. A
    dynamic job's outputs are its units' (``units``), each staged under its own claim.

    :raises PublishError: naming every problem found (the first 20).
    """
    staging = job_staging(record.output_prefix, record.job_id)
    staged = {o.key[len(staging.key) :]: o.size for o in objects.list(staging)}
    if units is not None:
        return _unit_outputs(record, files, units, staged)
    manifests = _manifests(record, staged, objects)
    inputs = {f.key for f in files}
    chosen: dict[str, tuple[int, dict[str, Any]]] = {}
    for f in files:
        attempt = attempt_of(record.processing_jobs, f.processing_job)
        tried = [attempt] if attempt else sorted(manifests, reverse=True)
        found = next(((n, manifests[n][f.key]) for n in tried if f.key in manifests.get(n, {})), None)
        if found:
            chosen[f.key] = found
    strangers = [e for entries in manifests.values() for k, e in entries.items() if k not in inputs]
    problems = _unsafe([e for _, e in chosen.values()] + strangers)
    problems += [f"no output for input {k}" for k in sorted(inputs - chosen.keys())]
    problems += [f"output for {e['input']} is not an input of this job" for e in strangers]
    promotions = []
    for key, (attempt, entry) in sorted(chosen.items()):
        if f"attempt-{attempt}/{entry['output']}" not in staged:
            problems.append(f"{entry['output']} (for {key}) is missing from attempt {attempt}'s staging")
        elif not _SHA256.match(str(entry.get("sha256"))):
            problems.append(f"{entry['output']} (for {key}) has no sha256 in its manifest")
        source = attempt_staging(record.output_prefix, record.job_id, attempt).join(entry["output"])
        promotions.append(Promotion(source, S3Uri.parse(record.output_prefix).join(entry["output"]), entry))
    outputs = [e["output"] for _, e in chosen.values()] + [e["output"] for e in strangers]
    problems += [f"{o} is written by more than one input" for o in sorted({o for o in outputs if outputs.count(o) > 1})]
    if problems:
        raise PublishError(
            f"job {record.job_id}: outputs staged under {staging} do not match its inputs:\n" + "\n".join(problems[:20])
        )
    rows = sum(e["rows"] for _, e in chosen.values())
    if rows != record.rows:
        raise PublishError(f"job {record.job_id}: manifests count {rows} rows but the job record counts {record.rows}")
    return promotions


def _unit_outputs(
    record: JobRecord, files: list[FileRecord], units: list[WorkUnit], staged: dict[str, int]
) -> list[Promotion]:
    """A dynamic job's outputs: every part of every input done, staged and hashed; a split input's
    parts in order."""
    staging = job_staging(record.output_prefix, record.job_id)
    by_key: dict[str, list[WorkUnit]] = {}
    for unit in units:
        by_key.setdefault(unit.key, []).append(unit)
    problems: list[str] = []
    promotions: list[Promotion] = []
    for f in sorted(files, key=lambda f: f.key):
        parts = sorted(by_key.pop(f.key, []), key=lambda u: u.part)
        undone = [u.label for u in parts if u.state is not UnitState.DONE or not u.output or not u.staged]
        if f.status is not FileStatus.SUCCEEDED or len(parts) != f.parts or undone:
            problems.append(f"no output for input {f.key}" + (f": {undone[0]} is not done" if undone else ""))
            continue
        for unit in parts:
            entry: dict[str, Any] = {"input": f.key, "output": unit.output, "rows": unit.rows, "sha256": unit.sha256}
            if unit.parts > 1:
                entry |= {"part": unit.part, "row_groups": [unit.first_group, unit.groups]}
            problems += _unsafe([entry, {"input": f.key, "output": unit.staged}])
            if str(unit.staged) not in staged:
                problems.append(f"{unit.output} (for {unit.label}) is missing from staging ({unit.staged})")
            elif not _SHA256.match(str(unit.sha256)):
                problems.append(f"{unit.output} (for {unit.label}) has no sha256 in its unit")
            target = S3Uri.parse(record.output_prefix).join(str(unit.output))
            promotions.append(Promotion(staging.join(str(unit.staged)), target, entry))
    problems += [f"units of {key} are not an input of this job" for key in sorted(by_key)]
    outputs = [p.entry["output"] for p in promotions]
    problems += [f"{o} is written by more than one unit" for o in sorted({o for o in outputs if outputs.count(o) > 1})]
    if problems:
        raise PublishError(
            f"job {record.job_id}: the units staged under {staging} do not match its inputs:\n"
            + "\n".join(problems[:20])
        )
    rows = sum(p.entry["rows"] for p in promotions)
    if rows != record.rows:
        raise PublishError(f"job {record.job_id}: its units count {rows} rows but the job record counts {record.rows}")
    return promotions


def _manifests(record: JobRecord, staged: dict[str, int], objects: ObjectStore) -> dict[int, dict[str, dict]]:
    """The manifest entries of each attempt, by input: only manifests named after the attempt's
    own processing job count."""
    staging = job_staging(record.output_prefix, record.job_id)
    found: dict[int, dict[str, dict]] = {}
    for attempt, name in enumerate(record.processing_jobs, start=1):
        folder = f"attempt-{attempt}/_manifests/{name}-"
        for key in sorted(k for k in staged if k.startswith(folder)):
            for entry in json.loads(objects.read(staging.join(key)))["files"]:
                found.setdefault(attempt, {})[entry["input"]] = entry
    return found


def _unsafe(entries: list[dict[str, Any]]) -> list[str]:
    """A manifest is written by the container: an entry whose keys could reach outside the
    output prefix is a problem, never a key to publish."""
    problems = []
    for entry in entries:
        for field in ("input", "output"):
            try:
                check_relative(str(entry.get(field)), f"manifest {field}")
            except UnsafeKey as error:
                problems.append(str(error))
    return problems
