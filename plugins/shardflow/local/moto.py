"""The embedded default's AWS: a moto server on 127.0.0.1 that serves S3, DynamoDB and SageMaker's
APIs, and the environment that points boto3, the SageMaker SDK and Airflow at it."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

__all__ = ["MotoServer", "aws_environment", "free_port", "moto_server", "start_moto", "wait_for_moto"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True)
class MotoServer:
    endpoint_url: str
    pid: int


def start_moto(port: int, log: IO[bytes] | int, *, detached: bool = False) -> subprocess.Popen[bytes]:
    """Start a moto server (:mod:`shardflow.local.moto_serve`) on 127.0.0.1:``port``; ``detached``
    lets it outlive this process (in a session of its own, so stopping its group stops it)."""
    return subprocess.Popen(
        [sys.executable, "-m", "shardflow.local.moto_serve", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=detached,
    )


def wait_for_moto(endpoint: str, process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """Return once the server at ``endpoint`` answers. :raises RuntimeError: it exited or never did."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1).close()
            return
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"moto server did not start on {endpoint} (exit code {process.poll()})") from None
            time.sleep(0.1)


@contextmanager
def moto_server(log_path: Path | None = None, timeout: float = 30.0) -> Iterator[MotoServer]:
    """Run a moto server on 127.0.0.1 at a free port; stop it (by its PID) on exit."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    with ExitStack() as stack:
        log = stack.enter_context(open(log_path, "ab")) if log_path else subprocess.DEVNULL
        process = start_moto(port, log)
        try:
            wait_for_moto(endpoint, process, timeout)
            yield MotoServer(endpoint, process.pid)
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def aws_environment(endpoint_url: str, region: str = "us-east-1") -> dict[str, str]:
    """Environment that points boto3, the SageMaker SDK and Airflow's ``aws_default`` at moto."""
    return {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": region,
        "AWS_ENDPOINT_URL": endpoint_url,
        "AIRFLOW_CONN_AWS_DEFAULT": json.dumps(
            {"conn_type": "aws", "extra": {"endpoint_url": endpoint_url, "region_name": region}}
        ),
    }
