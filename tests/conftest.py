"""Shared fixtures: one real moto server on 127.0.0.1 for the session, and fresh resources per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from shardflow.aws.jobstore import JobStore
from shardflow.local.demo_data import ensure_bucket
from shardflow.local.moto import MotoServer, aws_environment, moto_server

REPO = Path(__file__).resolve().parents[1]
# Processes the tests start (processing scripts, Airflow components) unpickle models from
# tests/support (the paced model): they need it on their path too.
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "tests"), os.environ.get("PYTHONPATH")]))


@pytest.fixture(scope="session")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    with moto_server(log_path=tmp_path_factory.mktemp("moto") / "moto.log") as server:
        yield server


@pytest.fixture
def aws(moto: MotoServer, monkeypatch: pytest.MonkeyPatch) -> MotoServer:
    """Point boto3 (in this process and in the processes it starts) at the moto server."""
    for key, value in aws_environment(moto.endpoint_url).items():
        monkeypatch.setenv(key, value)
    return moto


@pytest.fixture
def s3(aws: MotoServer):
    return boto3.client("s3")


@pytest.fixture
def bucket(s3) -> str:
    name = f"test-{uuid.uuid4().hex[:12]}"
    ensure_bucket(s3, name)
    return name


@pytest.fixture
def store(aws: MotoServer) -> JobStore:
    store = JobStore(boto3.client("dynamodb"), f"jobs-{uuid.uuid4().hex[:12]}")
    store.create_table()
    return store


@pytest.fixture
def local_env(aws, tmp_path, monkeypatch) -> Path:
    """The local backend's job folders under the test's own directory; fast heartbeats."""
    monkeypatch.setenv("SHARDFLOW_LOCAL_ROOT", str(tmp_path / "local"))
    monkeypatch.setenv("SHARDFLOW_HEARTBEAT_SECONDS", "0.2")
    return tmp_path / "local"
