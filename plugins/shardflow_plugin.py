"""Registers Shardflow's Airflow plugin: its pages in the UI (see shardflow.airflow.ui.plugin)."""

from shardflow.airflow.ui.plugin import ShardflowPlugin

__all__ = ["ShardflowPlugin"]
