"""The Airflow plugin that puts Shardflow's pages in the UI: the FastAPI app under ``/shardflow``, a
"Shardflow jobs" entry in the navigation, and a "Shardflow job" view on every DAG run.

Registered by ``plugins/shardflow_plugin.py``: the plugin loader imports top-level files in
``plugins/`` and skips the package itself (``plugins/.airflowignore``).
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from shardflow.airflow.ui.app import URL_PREFIX, create_app

__all__ = ["ShardflowPlugin"]


class ShardflowPlugin(AirflowPlugin):
    name = "shardflow"
    # Airflow reads these class attributes.
    fastapi_apps = [{"app": create_app(), "url_prefix": URL_PREFIX, "name": "Shardflow jobs"}]  # noqa: RUF012
    external_views = [  # noqa: RUF012
        {
            "name": "Shardflow jobs",
            "href": f"{URL_PREFIX}/jobs",
            "url_route": "shardflow-jobs",
            "destination": "nav",
            "category": "browse",
        },
        {
            "name": "Shardflow job",
            "href": f"{URL_PREFIX}/runs/{{DAG_ID}}/{{RUN_ID}}",
            "url_route": "shardflow-job",
            "destination": "dag_run",
        },
    ]
