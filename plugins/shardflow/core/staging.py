"""Where an attempt's outputs wait for publish: ``<output prefix>/_staging/<job id>/attempt-<N>/``.

Processing jobs write only to staging; publish alone writes the keys readers see. Spark, pyarrow
and pandas skip every name that starts with ``_`` or ``.``, so nothing under ``_staging/`` (nor
``_manifest.json``, ``_SUCCESS``) is ever read as data.
"""

from __future__ import annotations

from shardflow.core.s3uri import S3Uri

__all__ = [
    "MANIFEST",
    "STAGING_FOLDER",
    "SUCCESS",
    "attempt_of",
    "attempt_staging",
    "is_visible",
    "job_staging",
]

#: The folder under an output prefix that holds every job's staged attempts.
STAGING_FOLDER = "_staging"
#: What publish writes at the top of an output prefix: the list of what readers see, then the mark.
MANIFEST, SUCCESS = "_manifest.json", "_SUCCESS"


def job_staging(output_prefix: str, job_id: str) -> S3Uri:
    """Every staged attempt of one job, and its SageMaker input manifests."""
    return S3Uri.parse(output_prefix).as_prefix().join(STAGING_FOLDER, job_id).as_prefix()


def attempt_staging(output_prefix: str, job_id: str, attempt: int) -> S3Uri:
    """What attempt ``attempt`` uploads: its outputs and its instances' ``_manifests/``."""
    if attempt < 1:
        raise ValueError(f"attempt must be 1 or more, got {attempt}")
    return job_staging(output_prefix, job_id).join(f"attempt-{attempt}").as_prefix()


def attempt_of(processing_jobs: list[str], processing_job: str | None) -> int | None:
    """The attempt a processing job ran (its place in the record's list, from 1), if it is there."""
    if processing_job is None or processing_job not in processing_jobs:
        return None
    return processing_jobs.index(processing_job) + 1


def is_visible(relative_key: str) -> bool:
    """Whether a dataset reader lists this key (relative to the output prefix): none of its
    segments starts with ``_`` or ``.``, the prefixes pyarrow, Spark and pandas ignore."""
    return not any(part.startswith(("_", ".")) for part in relative_key.split("/"))
