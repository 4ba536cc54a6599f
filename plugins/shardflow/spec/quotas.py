"""Instance quotas: how many instances of each type may run at once (``SHARDFLOW_INSTANCE_QUOTAS``),
and the name of the Airflow pool that holds a type to its quota (:mod:`shardflow.airflow.pools`)."""

from __future__ import annotations

import re
from collections.abc import Mapping

__all__ = ["POOL_PREFIX", "default_instance_type", "parse_quotas", "pool_name", "quota_problem"]

POOL_PREFIX = "shardflow-"
_ENTRY = re.compile(r"^(?P<type>ml\.[a-z0-9]+\.[a-z0-9]+)=(?P<count>\d+)$")


def pool_name(instance_type: str) -> str:
    """The pool that counts the running instances of one type, e.g. ``shardflow-ml.m5.xlarge``."""
    return POOL_PREFIX + instance_type


def default_instance_type(quotas: Mapping[str, int]) -> str:
    """The instance type a form offers first: ``ml.m5.xlarge`` unless the quotas leave it out."""
    return "ml.m5.xlarge" if not quotas or "ml.m5.xlarge" in quotas else sorted(quotas)[0]


def parse_quotas(text: str) -> dict[str, int]:
    """``ml.m5.xlarge=20,ml.c5.2xlarge=8`` (the form of ``SHARDFLOW_INSTANCE_QUOTAS``) as a mapping."""
    quotas: dict[str, int] = {}
    for entry in filter(None, (part.strip() for part in text.split(","))):
        match = _ENTRY.match(entry.replace(" ", ""))
        if not match or int(match["count"]) < 1:
            raise ValueError(
                f"instance quota {entry!r} is not TYPE=COUNT with a count of 1 or more, e.g. ml.m5.xlarge=20"
            )
        quotas[match["type"]] = int(match["count"])
    return quotas


def quota_problem(instance_type: str, instance_count: int, quotas: Mapping[str, int]) -> str | None:
    """Why a job of this size could never start under ``quotas``; ``None`` when it can (or none are set)."""
    if not quotas:
        return None
    if instance_type not in quotas:
        return (
            f"{instance_type} has no quota in SHARDFLOW_INSTANCE_QUOTAS ({_listed(quotas)}): add it and run "
            "`shardflow pools sync`, or the job's tasks wait for a pool that does not exist"
        )
    if instance_count > quotas[instance_type]:
        return (
            f"{instance_count} instances of {instance_type} exceed its quota of {quotas[instance_type]}: "
            "lower compute.instance_count, or raise the quota"
        )
    return None


def _listed(quotas: Mapping[str, int]) -> str:
    return ", ".join(f"{t}={n}" for t, n in sorted(quotas.items()))
