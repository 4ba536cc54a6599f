"""A local AWS stand-in and the demo's data: a moto server on 127.0.0.1, a small real XGBoost
model trained the same way every time, and Parquet files of uneven sizes.

Used by ``make demo`` and by the project's own tests. Needs the ``local`` extra (moto).
"""

from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from shardflow.jobs import JobRecord
from shardflow.s3 import S3Uri

__all__ = [
    "DEMO_FEATURES",
    "DEMO_ROWS_PER_FILE",
    "MotoServer",
    "PacedModel",
    "aws_environment",
    "demo_dataset",
    "ensure_bucket",
    "free_port",
    "moto_server",
    "paced_model_bytes",
    "sample_job",
    "train_demo_model",
    "upload_dataset",
]

DEMO_FEATURES = [f"f{i}" for i in range(8)]
#: Uneven on purpose: real datasets are.
DEMO_ROWS_PER_FILE = (12_000, 3_000, 25_000, 800, 9_000, 17_000)


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


def sample_job(job_id: str = "demo-000000000001", bucket: str = "shardflow-demo", **changes: Any) -> JobRecord:
    """A job record as prepare would write it, for tests and benchmarks; ``changes`` override."""
    values: dict[str, Any] = {
        "job_id": job_id,
        "pipeline": job_id.rsplit("-", 1)[0],
        "dag_id": "shardflow_" + job_id.rsplit("-", 1)[0],
        "run_id": "manual__1",
        "model_uri": f"s3://{bucket}/models/model.joblib",
        "model_sha256": "ab" * 32,
        "input_prefix": f"s3://{bucket}/events/",
        "output_prefix": f"s3://{bucket}/scores/",
        "input_format": "parquet",
        "output_format": "parquet",
        "backend": "local",
        "compute": {"instance_type": "ml.m5.xlarge", "instance_count": 2, "max_runtime_seconds": 3600},
        "max_attempts": 3,
    }
    return JobRecord(**{**values, **changes})


def _features(rng: np.random.Generator, rows: int) -> np.ndarray:
    return rng.normal(size=(rows, len(DEMO_FEATURES))).astype(np.float32)


def _label(x: np.ndarray) -> np.ndarray:
    return ((x[:, 0] + x[:, 1] * x[:, 2] - 0.5 * x[:, 3] ** 2 + 0.3 * x[:, 4]) > -0.3).astype(np.int64)


class PacedModel:
    """A real model that takes at least ``seconds_per_call`` per prediction call, so a test can
    kill, freeze or retry things while a job is visibly running. Everything else (feature names,
    classes) is the wrapped model's.

    :param model: the fitted model to wrap.
    :param seconds_per_call: the least time one ``predict``/``predict_proba`` call takes.
    """

    def __init__(self, model: Any, seconds_per_call: float) -> None:
        self.model = model
        self.seconds_per_call = seconds_per_call

    def __getattr__(self, name: str) -> Any:
        if name in ("model", "seconds_per_call"):  # not set yet while unpickling
            raise AttributeError(name)
        return getattr(self.model, name)

    def predict(self, x: Any) -> Any:
        time.sleep(self.seconds_per_call)
        return self.model.predict(x)

    def predict_proba(self, x: Any) -> Any:
        time.sleep(self.seconds_per_call)
        return self.model.predict_proba(x)


def paced_model_bytes(seconds_per_call: float) -> bytes:
    """The demo model wrapped in :class:`PacedModel`, as joblib bytes."""
    import joblib

    buffer = io.BytesIO()
    joblib.dump(PacedModel(joblib.load(io.BytesIO(train_demo_model())), seconds_per_call), buffer)
    return buffer.getvalue()


def train_demo_model(rows: int = 4_000) -> bytes:
    """A small XGBoost classifier as joblib bytes; byte-identical on every call with the locked
    versions, so the demo spec can pin its sha256."""
    import joblib
    import pandas as pd
    import xgboost

    x = _features(np.random.default_rng(7), rows)
    frame = pd.DataFrame(x, columns=DEMO_FEATURES)
    model = xgboost.XGBClassifier(n_estimators=40, max_depth=4, n_jobs=1, random_state=0, tree_method="hist")
    model.fit(frame, _label(x))
    buffer = io.BytesIO()
    joblib.dump(model, buffer)
    return buffer.getvalue()


def demo_dataset(rows_per_file: Sequence[int] = DEMO_ROWS_PER_FILE, seed: int = 11) -> dict[str, pa.Table]:
    """Parquet-ready tables by relative key: an ``id`` column, the features, and a text column
    the model ignores. Some files sit in a sub-folder, as partitioned data does."""
    rng = np.random.default_rng(seed)
    tables: dict[str, pa.Table] = {}
    next_id = 0
    for index, rows in enumerate(rows_per_file):
        x = _features(rng, rows)
        columns: dict[str, Any] = {"id": np.arange(next_id, next_id + rows, dtype=np.int64)}
        columns.update({name: x[:, i] for i, name in enumerate(DEMO_FEATURES)})
        columns["region"] = np.array(["eu", "us", "apac"])[np.arange(rows) % 3]
        folder = "" if index % 2 == 0 else "late/"
        tables[f"{folder}part-{index:04d}.parquet"] = pa.table(columns)
        next_id += rows
    return tables


def upload_dataset(s3: Any, prefix: str, tables: dict[str, pa.Table]) -> list[str]:
    """Write each table as a Parquet object under ``prefix``; returns the keys written."""
    target = S3Uri.parse(prefix).as_prefix()
    keys = []
    for relative, table in tables.items():
        buffer = io.BytesIO()
        pq.write_table(table, buffer, row_group_size=5_000)
        s3.put_object(Bucket=target.bucket, Key=target.key + relative, Body=buffer.getvalue())
        keys.append(target.key + relative)
    return keys


def ensure_bucket(s3: Any, bucket: str) -> None:
    existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
    if bucket not in existing:
        s3.create_bucket(Bucket=bucket)
