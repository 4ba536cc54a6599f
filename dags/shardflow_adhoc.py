"""The ad-hoc Airflow DAG: one batch-inference job from the trigger form (Trigger DAG w/ config).

The form's Params schema refuses bad values before a run is created (see docs/adhoc.md).
"""

from shardflow.airflow.adhoc import build_adhoc_dag

dag = build_adhoc_dag()
