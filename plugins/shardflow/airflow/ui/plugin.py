"""The Airflow plugin that puts Shardflow's pages in the UI: the FastAPI app under ``/shardflow``, a
"Shardflow jobs" entry in the navigation, and a "Shardflow job" view on every DAG run.

Registered by ``plugins/shardflow_plugin.py``: the plugin loader imports top-level files in
``plugins/`` and skips the package itself (``plugins/.airflowignore``).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from airflow.configuration import conf
from airflow.plugins_manager import AirflowPlugin

from shardflow.airflow.ui.app import URL_PREFIX, create_app

__all__ = ["ShardflowPlugin", "pages_path"]


def pages_path() -> str:
    """Where the pages are, as the browser reaches them: under ``[api] base_url``'s path when
    Airflow is served under a subpath (``/airflow/shardflow``). The UI puts a view's ``href`` into
    its frame as given, so the subpath must be in it."""
    root = urlsplit(conf.get("api", "base_url", fallback="") or "").path.rstrip("/")
    return f"{root}{URL_PREFIX}"


class ShardflowPlugin(AirflowPlugin):
    name = "shardflow"
    # Airflow reads these class attributes.
    fastapi_apps = [{"app": create_app(), "url_prefix": URL_PREFIX, "name": "Shardflow jobs"}]  # noqa: RUF012
    external_views = [  # noqa: RUF012
        {
            "name": "Shardflow jobs",
            "href": f"{pages_path()}/jobs",
            "url_route": "shardflow-jobs",
            "destination": "nav",
            "category": "browse",
        },
        {
            "name": "Shardflow job",
            "href": f"{pages_path()}/runs/{{DAG_ID}}/{{RUN_ID}}",
            "url_route": "shardflow-job",
            "destination": "dag_run",
        },
    ]
