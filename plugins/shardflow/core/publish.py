"""The last step of a job: check that its outputs list every input exactly once, then mark the
output prefix complete with ``_manifest.json`` and ``_SUCCESS``."""

from __future__ import annotations

import json
from typing import Any

from shardflow.core.keys import check_relative
from shardflow.core.lifecycle import summarize
from shardflow.core.ports import JobStorePort, ObjectStore
from shardflow.core.record import JobStatus
from shardflow.core.s3uri import S3Uri
from shardflow.errors import PublishError, UnsafeKey

__all__ = ["publish_job"]


def publish_job(job_id: str, store: JobStorePort, objects: ObjectStore) -> dict[str, Any]:
    """Check that the outputs list every input exactly once, then write ``_manifest.json`` and
    ``_SUCCESS``. Reads the per-instance manifests of this job's processing jobs only, and
    refuses a manifest entry whose input or output is not a plain relative key."""
    record = store.get_job(job_id)
    if record.status is not JobStatus.SUCCEEDED:
        raise PublishError(f"job {job_id} is {record.status}, not SUCCEEDED: nothing to publish")
    output = S3Uri.parse(record.output_prefix)
    listed = {o.key[len(output.key) :]: o.size for o in objects.list(output)}
    entries: dict[str, dict[str, Any]] = {}
    for name in record.processing_jobs:  # a later attempt's entry replaces an earlier one
        for key in sorted(k for k in listed if k.startswith(f"_manifests/{name}-")):
            manifest = json.loads(objects.read(S3Uri(output.bucket, output.key + key)))
            for entry in manifest["files"]:
                entries[entry["input"]] = entry
    inputs = {f.key for f in store.list_files(job_id)}
    problems = _unsafe_entries(entries)
    problems += [f"no output for input {k}" for k in sorted(inputs - entries.keys())]
    problems += [f"output for {k} is not an input of this job" for k in sorted(entries.keys() - inputs)]
    problems += [
        f"{e['output']} (for {k}) is missing from S3" for k, e in sorted(entries.items()) if e["output"] not in listed
    ]
    outputs = [e["output"] for e in entries.values()]
    problems += [f"{o} is written by more than one input" for o in sorted({o for o in outputs if outputs.count(o) > 1})]
    if problems:
        raise PublishError(
            f"job {job_id}: outputs under {output} do not match its inputs:\n" + "\n".join(problems[:20])
        )
    rows = sum(e["rows"] for e in entries.values())
    if rows != record.rows:
        raise PublishError(f"job {job_id}: manifests count {rows} rows but the job record counts {record.rows}")
    manifest = {"job_id": job_id, "files": [entries[k] for k in sorted(entries)], "rows": rows}
    objects.put(output.join("_manifest.json"), json.dumps(manifest, indent=1).encode())
    objects.put(output.join("_SUCCESS"), b"")
    return summarize(record)


def _unsafe_entries(entries: dict[str, dict[str, Any]]) -> list[str]:
    """A manifest is written by the container: an entry whose keys could reach outside the
    output prefix is a problem, never a key to publish."""
    problems = []
    for entry in entries.values():
        for field in ("input", "output"):
            try:
                check_relative(str(entry.get(field)), f"manifest {field}")
            except UnsafeKey as error:
                problems.append(str(error))
    return problems
