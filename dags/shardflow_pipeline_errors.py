"""Reports every broken pipeline spec in dags/pipelines/ as one Airflow import error of this file.

It defines no DAG, so the error never marks the good pipelines' DAGs (in shardflow_pipelines.py)
stale. Airflow's safe mode only parses files that mention both "airflow" and "dag": this one does.
"""

from pathlib import Path

from shardflow.airflow.dags import check_pipeline_specs

check_pipeline_specs(Path(__file__).parent / "pipelines")
