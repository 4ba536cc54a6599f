"""`make up` / `make down` / `make status`: the whole platform on one machine, without Docker.

A moto server and the four Airflow components run in the background on 127.0.0.1 with this
checkout's ``dags/`` and ``plugins/``, Airflow on SQLite (WAL), an admin and a viewer who log in
with generated passwords, and the demo pipeline's model and recent days of input. Everything it
keeps lives under one folder (``.shardflow/platform/``, or ``SHARDFLOW_PLATFORM_DIR``): the
Airflow database, the local jobs, the logs, the passwords, and a snapshot of the moto server
taken at `make down` and put back at the next `make up`.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import sqlite3
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3

from shardflow.aws.jobstore import JobStore
from shardflow.compute.local import pid_alive
from shardflow.core.artifact import ModelArtifact
from shardflow.core.s3uri import S3Uri
from shardflow.local.demo import JOB_TABLE, REPO, airflow_environment, prepare_airflow
from shardflow.local.demo_data import demo_dataset, ensure_bucket, train_demo_model, upload_dataset
from shardflow.local.moto import aws_environment, start_moto, wait_for_moto
from shardflow.local.snapshot import restore_snapshot, save_snapshot
from shardflow.local.stack import component_environment, start_components, wait_for_api
from shardflow.spec import load_spec
from shardflow.spec.templating import render_prefix

__all__ = ["Platform", "PlatformState", "local_platform_environment"]

#: The users of the local platform and their roles in Airflow's simple auth manager.
USERS = {"admin": "admin", "viewer": "viewer"}
#: Days of demo input seeded up to today, so the demo DAG's scheduled runs find their data.
SEEDED_DAYS = 3


def _base_path(environ: Mapping[str, str]) -> str:
    """``SHARDFLOW_UI_BASE_PATH`` (``/airflow``): serve the UI under a subpath, as behind a proxy."""
    path = environ.get("SHARDFLOW_UI_BASE_PATH", "").strip().rstrip("/")
    if path and not path.startswith("/"):
        raise ValueError(f"SHARDFLOW_UI_BASE_PATH={path!r}: give a path that starts with /, such as /airflow")
    return path


def _port_free(port: int) -> bool:
    """Whether a server could listen on ``port`` (as servers do, reusing a port whose last
    connections are still closing)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _sessions(leaders: list[int]) -> list[int]:
    """Every live process in the sessions these processes lead. A component's task processes put
    themselves in process groups of their own, but stay in its session."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[3]) in leaders and fields[0] != "Z":
                    members.append(int(entry.name))
    return members


def _stop_sessions(leaders: list[int], timeout: float = 20.0) -> None:
    """Stop every process of the sessions ``leaders`` lead: SIGTERM, then SIGKILL for what is left."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in _sessions(leaders):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while _sessions(leaders) and time.monotonic() < deadline:
            time.sleep(0.2)
        if not _sessions(leaders):
            return


@dataclass(frozen=True)
class PlatformState:
    """What `make up` started, written to ``platform.json`` for `make down`, `make status` and
    the ``shardflow`` command."""

    ui_url: str
    moto_url: str
    database: str
    pids: dict[str, int]
    started_at: str

    def running(self) -> dict[str, int]:
        return {name: pid for name, pid in self.pids.items() if pid_alive(pid)}


class Platform:
    """The local platform whose state lives in ``root``.

    :param root: its folder (default ``SHARDFLOW_PLATFORM_DIR``, else ``.shardflow/platform`` in
        this checkout).
    """

    def __init__(self, root: Path | None = None, environ: Mapping[str, str] | None = None) -> None:
        self.environ = os.environ if environ is None else environ
        self.root = root or Path(self.environ.get("SHARDFLOW_PLATFORM_DIR") or REPO / ".shardflow" / "platform")
        self.state_file = self.root / "platform.json"
        self.passwords_file = self.root / "passwords.json"
        self.logs = self.root / "logs"
        self.snapshot = self.root / "moto-snapshot"

    # -- state ------------------------------------------------------------------------------

    def state(self) -> PlatformState | None:
        try:
            return PlatformState(**json.loads(self.state_file.read_text()))
        except FileNotFoundError:
            return None

    def passwords(self) -> dict[str, str]:
        """The users' passwords: generated on the first `make up`, kept (owner-only) after."""
        if self.passwords_file.is_file():
            return dict(json.loads(self.passwords_file.read_text()))
        self.root.mkdir(parents=True, exist_ok=True)
        passwords = {user: secrets.token_urlsafe(12) for user in USERS}
        self.passwords_file.touch(mode=0o600)
        self.passwords_file.write_text(json.dumps(passwords, indent=1))
        return passwords

    def _secret(self) -> str:
        """Signs the API's tokens; kept so a restart does not log everyone out."""
        path = self.root / "jwt-secret"
        if not path.is_file():
            path.touch(mode=0o600)
            path.write_text(secrets.token_hex(32))
        return path.read_text().strip()

    def environment(self, state: PlatformState) -> dict[str, str]:
        """The Airflow components' environment (and the ``shardflow`` command's, while it runs)."""
        env = airflow_environment(self.root, state.moto_url, REPO / "dags")
        port = urlsplit(state.ui_url).port or 8080
        return {
            **component_environment(env, port, self._secret()),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": state.database,
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(f"{u}:{r}" for u, r in USERS.items()),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(self.passwords_file),
            "AIRFLOW__API__BASE_URL": state.ui_url,
            # Under a subpath the API server serves its parts there only: the workers must call it there.
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{state.ui_url}/execution/",
            "SHARDFLOW_POLL_SECONDS": "5",
        }

    # -- commands ---------------------------------------------------------------------------

    def up(self, say: Callable[[str], None] = print) -> int:
        """Start everything and return; 1 (changing nothing) if it runs already or a port is taken."""
        current = self.state()
        if current is not None and current.running():
            say(
                f"Shardflow is already running (UI at {current.ui_url}): "
                "`make status` says what runs, `make down` stops it."
            )
            return 1
        ui_port = int(self.environ.get("SHARDFLOW_UI_PORT", "8080"))
        moto_port = int(self.environ.get("SHARDFLOW_MOTO_PORT", "5055"))
        for port, variable in ((ui_port, "SHARDFLOW_UI_PORT"), (moto_port, "SHARDFLOW_MOTO_PORT")):
            if not _port_free(port):
                say(f"port {port} on 127.0.0.1 is taken: free it, or set {variable} to another port")
                return 1
        self.logs.mkdir(parents=True, exist_ok=True)
        passwords = self.passwords()
        database = self.environ.get("SHARDFLOW_DB_URL") or self._sqlite_url()
        state = PlatformState(
            ui_url=f"http://127.0.0.1:{ui_port}{_base_path(self.environ)}",
            moto_url=f"http://127.0.0.1:{moto_port}",
            database=database,
            pids={},
            started_at=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        pids: dict[str, int] = {}
        try:
            say(f"==> starting a moto server on {state.moto_url}")
            with open(self.logs / "moto.log", "ab") as log:
                moto = start_moto(moto_port, log, detached=True)
            pids["moto"] = moto.pid
            self._write(state, pids)
            wait_for_moto(state.moto_url, moto)
            self._seed(state, say)
            env = self.environment(state)
            prepare_airflow(env, self.logs / "prepare.log")
            if database.startswith("sqlite"):
                self._use_wal(database)
            say("==> starting the Airflow api-server, scheduler, dag-processor and triggerer")
            processes = start_components(env, ui_port, self.logs)
            pids.update({name: p.pid for name, p in processes.items()})
            self._write(state, pids)
            wait_for_api(state.ui_url, processes, self.logs, timeout=180)
        except BaseException:
            say(f"could not start the platform; stopping what started. Logs: {self.logs}")
            self.down(say=lambda _: None)
            raise
        say("")
        say(f"Shardflow is up: open {state.ui_url} and log in as")
        for user, password in passwords.items():
            say(f"  {user:<7} {password}   ({USERS[user]})")
        say(f"(passwords kept in {self.passwords_file}; `make status` says what runs, `make down` stops it)")
        return 0

    def down(self, say: Callable[[str], None] = print) -> int:
        """Snapshot the moto server, stop every process `make up` started and every local job."""
        state = self.state()
        if state is None:
            say("Shardflow is not running.")
            return 0
        running = state.running()
        if "moto" in running:
            try:
                counts = save_snapshot(*self.aws_clients(state), self.snapshot)
                say(f"==> saved the moto server: {counts['objects']} objects, {counts['items']} job-table items")
            except Exception as error:  # stopping must go on; the last snapshot stays
                say(f"could not save the moto server's state ({error}); the previous snapshot is kept")
        _stop_sessions(self._local_jobs())
        # Airflow first, so no task writes to a server that is gone; moto last.
        _stop_sessions([pid for name, pid in running.items() if name != "moto"])
        _stop_sessions([running["moto"]] if "moto" in running else [])
        left = _sessions(list(state.pids.values()))
        if left:
            say(f"still running after SIGKILL: PIDs {left}")
            return 1
        self.state_file.unlink()
        say("Shardflow is down. `make up` starts it again with the same database and data.")
        return 0

    def status(self, say: Callable[[str], None] = print) -> int:
        """Say what runs where; 0 when everything runs, 1 otherwise."""
        state = self.state()
        if state is None:
            say("Shardflow is not running: `make up` starts it.")
            return 1
        running = state.running()
        say(f"UI       {state.ui_url}   (users: {', '.join(USERS)}; passwords in {self.passwords_file})")
        say(f"AWS      {state.moto_url}   (moto)")
        say(f"database {state.database}")
        for name, pid in state.pids.items():
            say(f"  {name:<13} pid {pid:<8} {'running' if name in running else 'NOT RUNNING'}")
        say(f"logs     {self.logs}")
        return 0 if len(running) == len(state.pids) else 1

    # -- parts ------------------------------------------------------------------------------

    def _write(self, state: PlatformState, pids: dict[str, int]) -> None:
        self.state_file.write_text(json.dumps({**asdict(state), "pids": pids}, indent=1))

    def _sqlite_url(self) -> str:
        # Busy writers wait up to 30 s for the lock instead of failing at once.
        return f"sqlite:///{self.root / 'airflow' / 'airflow.db'}?timeout=30"

    @staticmethod
    def _use_wal(database: str) -> None:
        """WAL lets readers go on while one component writes; the mode stays with the file."""
        path = database.removeprefix("sqlite:///").split("?", 1)[0]
        with contextlib.closing(sqlite3.connect(path, timeout=30)) as connection:
            connection.execute("PRAGMA journal_mode=WAL")

    def aws_clients(self, state: PlatformState) -> tuple[Any, Any]:
        """S3 and DynamoDB clients of the platform's moto server."""
        env = aws_environment(state.moto_url)
        session = boto3.session.Session(
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
            region_name=env["AWS_DEFAULT_REGION"],
        )
        return (
            session.client("s3", endpoint_url=state.moto_url),
            session.client("dynamodb", endpoint_url=state.moto_url),
        )

    def _seed(self, state: PlatformState, say: Callable[[str], None]) -> None:
        """Put the last snapshot back, then make sure the job table, the demo model and the last
        few days of demo input are there."""
        s3, dynamodb = self.aws_clients(state)
        restored = restore_snapshot(s3, dynamodb, self.snapshot)
        if restored["objects"] or restored["items"]:
            say(f"==> restored {restored['objects']} objects and {restored['items']} job-table items")
        JobStore(dynamodb, JOB_TABLE).create_table()
        spec = load_spec(REPO / "dags" / "pipelines" / "demo.yaml")
        model = S3Uri.parse(ModelArtifact.of_spec(spec.model).uri)
        ensure_bucket(s3, model.bucket)
        s3.put_object(Bucket=model.bucket, Key=model.key, Body=train_demo_model())
        today = datetime.now(UTC).date()
        marker = spec.input.wait.marker if spec.input.wait else None
        for day in (today - timedelta(days=n) for n in range(SEEDED_DAYS)):
            prefix = S3Uri.parse(render_prefix(spec.input.prefix, day))
            if s3.list_objects_v2(Bucket=prefix.bucket, Prefix=prefix.key, MaxKeys=1).get("KeyCount"):
                if marker:  # a day restored from a snapshot taken before the demo waited for it
                    s3.put_object(Bucket=prefix.bucket, Key=prefix.key + marker, Body=b"")
                continue
            upload_dataset(s3, str(prefix), demo_dataset(), marker=marker)
            say(f"==> wrote the demo's input for {day} to {prefix}")

    def _local_jobs(self) -> list[int]:
        """The runner PIDs of local processing jobs still going (each leads its own group)."""
        pids = []
        for path in (self.root / "local").glob("*/runner.pid"):
            with contextlib.suppress(ValueError, OSError):
                pid = int(path.read_text())
                if pid_alive(pid):
                    pids.append(pid)
        return pids


def local_platform_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The AWS and Airflow settings of this checkout's running platform, for the ``shardflow``
    command; empty when it does not run, or when ``environ`` already points AWS somewhere."""
    if any(name in environ for name in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_PROFILE")):
        return {}
    platform = Platform(environ=environ)
    state = platform.state()
    if state is None or "moto" not in state.running():
        return {}
    env = platform.environment(state)
    keep = ("AWS_", "AIRFLOW_CONN_", "AIRFLOW_HOME", "AIRFLOW__DATABASE__", "SHARDFLOW_")
    return {name: value for name, value in env.items() if name.startswith(keep) and name not in environ}
