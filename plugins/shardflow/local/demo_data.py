"""The demo's data: a small real XGBoost model trained the same way every time, and Parquet files
of uneven sizes, as ``make demo``, ``shardflow seed-demo`` and the benchmarks use them."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from shardflow.core.s3uri import S3Uri

__all__ = ["DEMO_FEATURES", "DEMO_ROWS_PER_FILE", "demo_dataset", "ensure_bucket", "train_demo_model", "upload_dataset"]

DEMO_FEATURES = [f"f{i}" for i in range(8)]
#: Uneven on purpose: real datasets are.
DEMO_ROWS_PER_FILE = (12_000, 3_000, 25_000, 800, 9_000, 17_000)


def _features(rng: np.random.Generator, rows: int) -> np.ndarray:
    return rng.normal(size=(rows, len(DEMO_FEATURES))).astype(np.float32)


def _label(x: np.ndarray) -> np.ndarray:
    return ((x[:, 0] + x[:, 1] * x[:, 2] - 0.5 * x[:, 3] ** 2 + 0.3 * x[:, 4]) > -0.3).astype(np.int64)


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


def upload_dataset(s3: Any, prefix: str, tables: dict[str, pa.Table], marker: str | None = None) -> list[str]:
    """Write each table as a Parquet object under ``prefix``, then the empty ``marker`` object if
    one is named (``_SUCCESS``, as a producer marks its input complete); returns the Parquet keys."""
    target = S3Uri.parse(prefix).as_prefix()
    keys = []
    for relative, table in tables.items():
        buffer = io.BytesIO()
        pq.write_table(table, buffer, row_group_size=5_000)
        s3.put_object(Bucket=target.bucket, Key=target.key + relative, Body=buffer.getvalue())
        keys.append(target.key + relative)
    if marker:
        s3.put_object(Bucket=target.bucket, Key=target.key + marker, Body=b"")
    return keys


def ensure_bucket(s3: Any, bucket: str) -> None:
    existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
    if bucket not in existing:
        s3.create_bucket(Bucket=bucket)
