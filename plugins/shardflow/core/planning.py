"""Planning a job: its id, its processing job names, and which instance reads which input object."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from typing import TypeVar

from shardflow.contract import INPUT_SUFFIXES, MAX_JOB_NAME
from shardflow.core.s3uri import S3Object

__all__ = ["assign_shards", "input_suffixes", "is_input", "job_id_for_run", "processing_job_name"]

T = TypeVar("T")


def input_suffixes(input_format: str) -> tuple[str, ...]:
    return INPUT_SUFFIXES[input_format]


def is_input(found: S3Object, input_format: str) -> bool:
    """Whether a listed object is one of a job's inputs: a file of its format, not empty (what
    prepare plans, and what a run waiting for its first input waits for)."""
    return found.key.endswith(input_suffixes(input_format)) and found.size > 0


def _slug(text: str) -> str:
    return re.sub(r"-+", "-", re.sub(r"[^a-zA-Z0-9]", "-", text)).strip("-").lower()


def job_id_for_run(pipeline: str, dag_id: str, run_id: str) -> str:
    """One job per DAG run: the same run always maps to the same job, so a retried task finds it."""
    digest = hashlib.sha256(f"{dag_id}\x00{run_id}".encode()).hexdigest()[:12]
    return f"{_slug(pipeline)[:40]}-{digest}"


def processing_job_name(job_id: str, attempt: int) -> str:
    """The processing job's name for one attempt: deterministic, unique per attempt, and within
    SageMaker's rule ``^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$``."""
    if attempt < 1:
        raise ValueError(f"attempt must be 1 or more, got {attempt}")
    suffix = f"-a{attempt}"
    head = _slug(job_id)[: MAX_JOB_NAME - len(suffix)].rstrip("-")
    return head + suffix


def assign_shards(keys: Sequence[T], instance_count: int) -> list[list[T]]:
    """Split objects over instances the way ``S3DataDistributionType=ShardedByS3Key`` does: each
    instance gets about 1/N of the objects, every object exactly once, in key order.

    Objects are dealt out in turn (object i to instance i mod N), so no instance gets more than
    one object above any other; an instance may get none when there are fewer objects than
    instances.
    """
    if instance_count < 1:
        raise ValueError(f"instance_count must be 1 or more, got {instance_count}")
    shards: list[list[T]] = [[] for _ in range(instance_count)]
    for index, key in enumerate(keys):
        shards[index % instance_count].append(key)
    return shards
