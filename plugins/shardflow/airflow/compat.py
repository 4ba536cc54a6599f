"""The Airflow names whose home moved between the Airflow versions Shardflow runs on.

Shardflow is built and tested on Airflow 3.3; Amazon MWAA also runs older Airflow 3 releases.
Before Airflow 3.2 the task SDK does not export these exceptions: they live in ``airflow.exceptions``.
"""

from __future__ import annotations

try:
    from airflow.sdk.exceptions import AirflowFailException, AirflowSensorTimeout
except ImportError:  # Airflow 3.0 and 3.1
    from airflow.exceptions import AirflowFailException, AirflowSensorTimeout  # type: ignore[no-redef]

__all__ = ["AirflowFailException", "AirflowSensorTimeout"]
