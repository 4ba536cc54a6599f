"""The four Airflow 3 components (api-server, scheduler, dag-processor, triggerer) as local
processes on 127.0.0.1, for tests and local trials; each is stopped by its PID on exit."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from shardflow.local.demo import prepare_airflow
from shardflow.local.moto import free_port

__all__ = ["AirflowStack", "airflow_stack", "component_environment", "start_components", "wait_for_api"]

_COMPONENTS = {
    "api-server": ["api-server", "-H", "127.0.0.1", "--workers", "1"],
    "scheduler": ["scheduler", "--skip-serve-logs"],
    "dag-processor": ["dag-processor"],
    "triggerer": ["triggerer", "--skip-serve-logs"],
}


@dataclass(frozen=True)
class AirflowStack:
    api_url: str
    env: dict[str, str]
    pids: dict[str, int]
    logs: Path

    def token(self) -> str:
        """A bearer token for the REST API (the simple auth manager, every user an admin)."""
        with urllib.request.urlopen(f"{self.api_url}/auth/token", timeout=10) as response:
            return str(json.loads(response.read())["access_token"])

    def airflow(self, *args: str, timeout: float = 120) -> str:
        """Run one ``airflow`` CLI command against this stack; its output, or an error with it."""
        result = subprocess.run([_airflow_bin(), *args], env=self.env, capture_output=True, text=True, timeout=timeout)
        if result.returncode != 0:
            raise RuntimeError(f"airflow {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
        return result.stdout


def _airflow_bin() -> str:
    return str(Path(sys.executable).with_name("airflow"))


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Each component leads its own process group: its executor workers and servers go with it."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@contextmanager
def metadata_database(fallback: Path) -> Iterator[str]:
    """A fresh PostgreSQL database on 127.0.0.1, dropped on exit, when a server answers there:
    four components and the CLI writing at once can make SQLite report "database is locked".
    Else SQLite at ``fallback``."""
    import psycopg2

    try:
        admin = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="postgres", connect_timeout=3)
    except psycopg2.OperationalError:
        yield f"sqlite:///{fallback}"
        return
    admin.autocommit = True
    name = f"shardflow_stack_{secrets.token_hex(4)}"
    try:
        with admin.cursor() as cursor:
            cursor.execute(f"CREATE DATABASE {name}")
        yield f"postgresql+psycopg2://postgres@127.0.0.1:5432/{name}"
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()


@contextmanager
def airflow_stack(env: dict[str, str], logs: Path, timeout: float = 90) -> Iterator[AirflowStack]:
    """Prepare a metadata database (:func:`metadata_database`: migrated, pools synced), start the
    four components on it, wait until the API answers, and stop them all on exit."""
    with metadata_database(Path(env["AIRFLOW_HOME"]) / "airflow.db") as database:
        yield from _run_stack({**env, "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": database}, logs, timeout)


def component_environment(env: dict[str, str], port: int, jwt_secret: str) -> dict[str, str]:
    """What the four components share on top of ``env``: the API's port, the execution API they
    report to, and the secret that signs their tokens."""
    return {
        **os.environ,
        **env,
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__API_AUTH__JWT_SECRET": jwt_secret,
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
        "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "1",
    }


def start_components(env: dict[str, str], port: int, logs: Path) -> dict[str, subprocess.Popen[bytes]]:
    """Start the four components, each leading a session of its own (so its process group holds
    its executor's workers too) and logging to ``logs/<name>.log``."""
    logs.mkdir(parents=True, exist_ok=True)
    processes: dict[str, subprocess.Popen[bytes]] = {}
    for name, args in _COMPONENTS.items():
        extra = ["-p", str(port)] if name == "api-server" else []
        with open(logs / f"{name}.log", "ab") as log:
            processes[name] = subprocess.Popen(
                [_airflow_bin(), *args, *extra],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
    return processes


def wait_for_api(api_url: str, processes: dict[str, subprocess.Popen[bytes]], logs: Path, timeout: float) -> None:
    """Return once the api-server answers. :raises RuntimeError: a component exited, or time ran out."""
    deadline = time.monotonic() + timeout
    while True:
        dead = [n for n, p in processes.items() if p.poll() is not None]
        if dead:
            raise RuntimeError(f"airflow {', '.join(dead)} exited at start; see {logs}")
        try:
            urllib.request.urlopen(f"{api_url}/api/v2/monitor/health", timeout=2).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the api-server did not answer on {api_url} within {timeout} s") from None
            time.sleep(0.5)


def _run_stack(env: dict[str, str], logs: Path, timeout: float) -> Iterator[AirflowStack]:
    port = free_port()
    env = {
        **component_environment(env, port, secrets.token_hex(16)),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
    }
    logs.mkdir(parents=True, exist_ok=True)
    prepare_airflow(env, logs / "prepare.log")  # the database, and the pools its quotas ask for
    api_url = f"http://127.0.0.1:{port}"
    with ExitStack() as stack:
        processes = start_components(env, port, logs)
        for process in processes.values():
            stack.callback(_stop, process)
        wait_for_api(api_url, processes, logs, timeout)
        yield AirflowStack(api_url, env, {n: p.pid for n, p in processes.items()}, logs)
