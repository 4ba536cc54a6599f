"""`make up`, `make status`, `make down` as a user runs them: the platform starts in the background,
refuses a second start, lets the `shardflow` command find it, keeps the job table's history across
a restart, and leaves no process and no port behind."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from datetime import UTC, datetime
from pathlib import Path

from support.records import sample_job

from shardflow.aws.jobstore import JobStore
from shardflow.core.s3uri import S3Uri
from shardflow.local.demo import JOB_TABLE, REPO
from shardflow.local.moto import free_port
from shardflow.local.platform import Platform, PlatformState
from shardflow.spec import load_spec
from shardflow.spec.templating import render_prefix


def make(target: str, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "--no-print-directory", "-C", str(REPO), target],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def shardflow_jobs(pipeline: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """This checkout's `shardflow jobs`, run with ``env`` and nothing else."""
    command = [str(REPO / ".venv" / "bin" / "shardflow"), "jobs", "--pipeline", pipeline]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def port_taken(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def test_make_up_runs_in_the_background_until_make_down_and_keeps_the_job_table(tmp_path):
    ui_port, moto_port = free_port(), free_port()
    user_env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "AIRFLOW", "SHARDFLOW_"))}
    env = {
        **user_env,
        "SHARDFLOW_PLATFORM_DIR": str(tmp_path / "platform"),
        "SHARDFLOW_UI_PORT": str(ui_port),
        "SHARDFLOW_MOTO_PORT": str(moto_port),
    }
    started = make("up", env)
    assert started.returncode == 0, started.stdout + started.stderr
    try:
        assert f"open http://127.0.0.1:{ui_port} and log in as" in started.stdout
        passwords = json.loads((tmp_path / "platform" / "passwords.json").read_text())
        assert set(passwords) == {"admin", "viewer"}
        assert all(password in started.stdout for password in passwords.values())
        assert oct((tmp_path / "platform" / "passwords.json").stat().st_mode & 0o777) == "0o600"
        state = PlatformState(**json.loads((tmp_path / "platform" / "platform.json").read_text()))
        assert set(state.pids) == {"moto", "api-server", "scheduler", "dag-processor", "triggerer"}
        assert all(alive(pid) for pid in state.pids.values())

        again = make("up", env)
        assert again.returncode != 0
        assert "already running" in again.stdout
        assert json.loads((tmp_path / "platform" / "platform.json").read_text())["pids"] == state.pids

        status = make("status", env)
        assert status.returncode == 0 and f"http://127.0.0.1:{ui_port}" in status.stdout

        # Today's demo input is seeded with the marker the demo's input.wait waits for.
        s3, dynamodb = Platform(tmp_path / "platform").aws_clients(state)
        demo = load_spec(REPO / "dags" / "pipelines" / "demo.yaml")
        assert demo.input.wait is not None and demo.input.wait.marker
        today = S3Uri.parse(render_prefix(demo.input.prefix, datetime.now(UTC).date()))
        assert s3.head_object(Bucket=today.bucket, Key=today.key + demo.input.wait.marker)["ContentLength"] == 0

        # The checkout's shardflow command finds the running platform by itself.
        store = JobStore(dynamodb, JOB_TABLE)
        store.create_job(sample_job("history-000000000001", pipeline="history"), [])
        listed = shardflow_jobs("history", env)
        assert listed.returncode == 0, listed.stderr
        assert "history-000000000001" in listed.stdout
    finally:
        stopped = make("down", env)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert not [name for name, pid in state.pids.items() if alive(pid)]
    assert not port_taken(ui_port) and not port_taken(moto_port)
    assert not (tmp_path / "platform" / "platform.json").exists()
    assert (tmp_path / "platform" / "airflow" / "airflow.db").is_file()  # the database stays

    restarted = make("up", env)
    try:
        assert restarted.returncode == 0, restarted.stdout + restarted.stderr
        listed = shardflow_jobs("history", env)
        assert "history-000000000001" in listed.stdout  # the job table's history came back
    finally:
        assert make("down", env).returncode == 0
