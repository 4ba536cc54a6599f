"""Cluster policy for the ad-hoc DAG: its submit and wait tasks take the pool of the instance type
the trigger form chose, one slot per instance. Import it in ``airflow_local_settings.py``."""

from __future__ import annotations

from typing import Any

from shardflow.spec.quotas import default_instance_type, pool_name
from shardflow.spec.settings import Settings

__all__ = ["ADHOC_DAG_ID", "POOLED_TASKS", "task_instance_mutation_hook"]

ADHOC_DAG_ID = "shardflow_adhoc"
#: The tasks that hold a job's instances while it runs.
POOLED_TASKS = frozenset({"submit", "wait"})


def task_instance_mutation_hook(task_instance: Any, dag_run: Any = None) -> None:
    """Airflow calls this in the scheduler as it creates or clears a task instance.

    A pipeline's tasks get their pool from the spec when the DAG is parsed; an ad-hoc run's
    instance type and count are known only from its ``conf``, so its pool is set here. A form
    that asks for more than the type's quota is left alone: its prepare step refuses it.
    """
    if task_instance.dag_id != ADHOC_DAG_ID or task_instance.task_id not in POOLED_TASKS or dag_run is None:
        return
    quotas = Settings.from_env().instance_quotas
    if not quotas:
        return
    conf = dag_run.conf or {}
    instance_type = conf.get("instance_type", default_instance_type(quotas))
    count = conf.get("instance_count", 1)
    if instance_type in quotas and isinstance(count, int) and 1 <= count <= quotas[instance_type]:
        task_instance.pool = pool_name(instance_type)
        task_instance.pool_slots = count
