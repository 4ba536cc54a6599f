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

__all__ = ["MotoServer", "aws_environment", "free_port", "moto_server"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True)
class MotoServer:
    endpoint_url: str
    pid: int


@contextmanager
def moto_server(log_path: Path | None = None, timeout: float = 30.0) -> Iterator[MotoServer]:
    """Run a moto server on 127.0.0.1 at a free port; stop it (by its PID) on exit."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    with ExitStack() as stack:
        log = stack.enter_context(open(log_path, "ab")) if log_path else subprocess.DEVNULL
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1).close()
                    break
                except OSError:
                    if process.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(
                            f"moto server did not start on {endpoint} (exit code {process.poll()})"
                        ) from None
                    time.sleep(0.1)
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
