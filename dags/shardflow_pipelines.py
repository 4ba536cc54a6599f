"""Airflow DAGs, one per good pipeline spec in dags/pipelines/ (see docs/pipelines.md).

A broken spec is left out here and reported by shardflow_pipeline_errors.py instead: Airflow marks
every DAG of a file that has an import error as stale, so errors must come from another file.
Airflow's safe mode only parses files that mention both "airflow" and "dag": this docstring does.
"""

from pathlib import Path

from shardflow.airflow.dags import build_pipeline_dags

globals().update(build_pipeline_dags(Path(__file__).parent / "pipelines").dags)
