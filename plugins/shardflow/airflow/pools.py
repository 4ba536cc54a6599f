"""Airflow pools that keep running jobs within the account's instance quotas: one per instance
type, one slot per instance, deferred tasks counted."""

from __future__ import annotations

from collections.abc import Mapping

from airflow.models.pool import Pool

from shardflow.spec.quotas import pool_name

__all__ = ["sync_pools"]


def sync_pools(quotas: Mapping[str, int]) -> dict[str, int]:
    """Create or resize one pool per instance type, counting deferred tasks; returns name -> slots.

    Needs Airflow's metadata database; pools of types no longer listed are left alone.
    """
    synced = {}
    for instance_type, slots in sorted(quotas.items()):
        name = pool_name(instance_type)
        Pool.create_or_update_pool(
            name,
            slots,
            f"Shardflow: {instance_type} instances that may run at once (the account's quota)",
            include_deferred=True,
        )
        synced[name] = slots
    return synced
