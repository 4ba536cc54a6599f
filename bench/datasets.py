"""The benchmark's data and models, made deterministically from fixed seeds and kept under
``bench/data/`` (git-ignored) so a second run reuses them."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

__all__ = [
    "FEATURES",
    "MIXED_FEATURES",
    "Sizes",
    "ensure_dataset",
    "ensure_mixed",
    "ensure_models",
    "file_sizes",
]

FEATURES = [f"f{i:02d}" for i in range(40)]
#: The mixed-type scenario's features: text with gaps, a category, a nullable integer, floats with
#: NaN, a boolean, and numbers.
MIXED_FEATURES = ["country", "device", "age", "amount", "active", *(f"m{i}" for i in range(8))]
_COUNTRIES = [f"C{i:02d}" for i in range(30)]
_WEIGHTS = np.random.default_rng(20260101).standard_normal(len(FEATURES))
# Bytes per row of these files as pyarrow's defaults store them (dictionary pages that fall back
# to plain encoding on random floats): to size the memory scenario's files in megabytes.
_BYTES_PER_ROW = 244
_WRITE_ROWS = 262_144


@dataclass(frozen=True)
class Sizes:
    """How big the benchmark is; ``quick`` shrinks everything for a first look.

    :param rows: rows over all the small files (and in the single big file).
    :param files: how many small files, of uneven sizes between ``low`` and ``high`` rows.
    :param memory_mb: sizes of the one-file inputs of the memory scenario.
    """

    rows: int = 1_000_000
    files: int = 24
    low: int = 20_000
    high: int = 100_000
    memory_mb: tuple[int, ...] = (100, 500, 2000)
    train_rows: int = 100_000
    trees: int = 200
    depth: int = 8


def file_sizes(sizes: Sizes) -> list[int]:
    """Uneven file sizes that add up to ``sizes.rows``: one file of ``low`` rows, one of ``high``,
    the rest drawn between them and scaled to the total."""
    rng = np.random.default_rng(7)
    rest = sizes.rows - sizes.low - sizes.high
    weights = rng.random(sizes.files - 2) ** 2 + 0.05
    counts = np.full(sizes.files - 2, sizes.low) + np.floor(
        weights / weights.sum() * (rest - sizes.low * (sizes.files - 2))
    ).astype(int)
    counts[int(np.argmin(counts))] += rest - int(counts.sum())
    result = [sizes.high, *(int(c) for c in counts), sizes.low]
    if sum(result) != sizes.rows or min(result) < sizes.low or max(result) > sizes.high:
        raise ValueError(f"cannot split {sizes.rows} rows into {sizes.files} files of {sizes.low}..{sizes.high}")
    return [result[i] for i in rng.permutation(len(result))]


def _features(seed: int, rows: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((rows, len(FEATURES)), dtype=np.float32)


def _labels(x: np.ndarray, seed: int) -> np.ndarray:
    noise = np.random.default_rng(seed).standard_normal(len(x))
    score = x @ _WEIGHTS + 2.0 * np.sin(3.0 * x[:, 0]) * x[:, 1] + x[:, 2] * x[:, 3] + noise
    return (score > 0).astype(np.int64)


def _table(first_id: int, x: np.ndarray) -> pa.Table:
    columns = {"id": pa.array(np.arange(first_id, first_id + len(x), dtype=np.int64))}
    columns |= {name: pa.array(x[:, j]) for j, name in enumerate(FEATURES)}
    return pa.table(columns)


def _chunks(total: int, seed: int) -> Iterator[tuple[int, np.ndarray]]:
    """Rows ``0..total`` in chunks that depend only on ``seed`` and their position."""
    for index, start in enumerate(range(0, total, _WRITE_ROWS)):
        yield start, _features(seed * 1_000_003 + index, min(_WRITE_ROWS, total - start))


def _marker(folder: Path) -> Path:
    # Beside the folder, not in it: readers of the folder (Spark) take every file in it for data.
    return folder.with_name(f"{folder.name}.recipe.json")


def _complete(folder: Path, recipe: dict[str, object]) -> bool:
    marker = _marker(folder)
    # Compared as JSON has them: tuples come back as lists.
    return marker.exists() and json.loads(marker.read_text()) == json.loads(json.dumps(recipe))


def _mark(folder: Path, recipe: dict[str, object]) -> None:
    _marker(folder).write_text(json.dumps(recipe))


def _write_file(path: Path, chunks: Iterator[tuple[int, np.ndarray]], offset: int = 0) -> int:
    """Stream chunks into one Parquet file with pyarrow's defaults, as a data team's files are."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = 0
    writer: pq.ParquetWriter | None = None
    for start, x in chunks:
        table = _table(offset + start, x)
        writer = writer or pq.ParquetWriter(path, table.schema)
        writer.write_table(table)
        rows += len(x)
    assert writer is not None
    writer.close()
    return rows


def ensure_dataset(root: Path, sizes: Sizes) -> dict[str, Path]:
    """Create (once) the scenarios' input folders: ``files`` (the small files), ``big`` (the same
    rows in one file) and ``mem-<MB>`` (one file of about that many megabytes each)."""
    recipe = {"rows": sizes.rows, "files": sizes.files, "low": sizes.low, "high": sizes.high, "version": 1}
    folders = {"files": root / "files", "big": root / "big"}
    if not all(_complete(f, recipe) for f in folders.values()):
        for folder in folders.values():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
        offset = 0
        all_chunks: list[tuple[int, np.ndarray]] = []
        for index, count in enumerate(file_sizes(sizes)):
            x = _features(index, count)
            _write_file(folders["files"] / f"part-{index:04d}.parquet", iter([(0, x)]), offset)
            all_chunks.append((offset, x))
            offset += count
        _write_file(folders["big"] / "all.parquet", iter(all_chunks))
        del all_chunks
        for folder in folders.values():
            _mark(folder, recipe)
    for mb in sizes.memory_mb:
        folder = folders[f"mem-{mb}"] = root / f"mem-{mb}"
        rows = mb * 1_000_000 // _BYTES_PER_ROW
        if not _complete(folder, {"rows": rows, "version": 1}):
            shutil.rmtree(folder, ignore_errors=True)
            _write_file(folder / "one.parquet", _chunks(rows, mb))
            _mark(folder, {"rows": rows, "version": 1})
    return folders


def ensure_models(root: Path, sizes: Sizes) -> dict[str, tuple[Path, str]]:
    """Train (once) the XGBoost classifier and the logistic regression on rows of their own;
    returns each model's path and sha256."""
    import pandas as pd
    import xgboost
    from sklearn.linear_model import LogisticRegression

    folder = root / "models"
    recipe = {"sizes": asdict(sizes), "version": 1, "xgboost": xgboost.__version__}
    paths = {"xgboost": folder / "xgboost.joblib", "logreg": folder / "logreg.joblib"}
    if not _complete(folder, recipe):
        folder.mkdir(parents=True, exist_ok=True)
        x = _features(99_999, sizes.train_rows)
        frame, y = pd.DataFrame(x, columns=FEATURES), _labels(x, 5)
        booster = xgboost.XGBClassifier(
            n_estimators=sizes.trees, max_depth=sizes.depth, tree_method="hist", n_jobs=2, random_state=0
        )
        joblib.dump(booster.fit(frame, y), paths["xgboost"])
        joblib.dump(LogisticRegression(max_iter=1000).fit(frame, y), paths["logreg"])
        _mark(folder, recipe)
    return {name: (path, hashlib.sha256(path.read_bytes()).hexdigest()) for name, path in paths.items()}


def _mixed_frame(seed: int, rows: int) -> Any:
    """Rows of mixed types, as pandas holds them before it writes them."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    country = rng.choice(np.array(_COUNTRIES, dtype=object), rows)
    country[rng.random(rows) < 0.05] = None
    age = pd.array(rng.integers(18, 90, rows), dtype="Int64")
    age[rng.random(rows) < 0.1] = pd.NA
    amount = rng.lognormal(3, 1, rows)
    amount[rng.random(rows) < 0.1] = np.nan
    frame = pd.DataFrame(
        {
            "id": np.arange(seed * 10_000_000, seed * 10_000_000 + rows, dtype=np.int64),
            "country": pd.Series(country, dtype="str"),
            "device": pd.Categorical(rng.choice(["ios", "android", "web", "tv"], rows)),
            "age": age,
            "amount": amount,
            "active": rng.random(rows) < 0.3,
        }
    )
    numbers = rng.standard_normal((rows, 8)).astype(np.float32)
    for j in range(8):
        frame[f"m{j}"] = numbers[:, j]
    return frame


def _mixed_labels(frame: Any) -> np.ndarray:
    score = frame["amount"].fillna(20).to_numpy(dtype=float) / 20 - frame["age"].fillna(50).to_numpy(dtype=float) / 50
    score += frame["m0"].to_numpy() + np.where(frame["device"] == "ios", 0.5, 0.0) + frame["active"].to_numpy()
    return (score + np.random.default_rng(3).standard_normal(len(frame)) > 1.0).astype(np.int64)


def ensure_mixed(root: Path, sizes: Sizes) -> tuple[Path, tuple[Path, str]]:
    """Create (once) the mixed-type scenario: Parquet files as pandas writes them, of the small
    files' sizes, and the scikit-learn Pipeline that takes them; returns the folder and the
    model's path and sha256."""
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline, make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    folder, model = root / "mixed", root / "models-mixed" / "pipeline.joblib"
    recipe = {"rows": sizes.rows, "files": sizes.files, "low": sizes.low, "high": sizes.high, "version": 1}
    if not _complete(folder, recipe):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        for index, count in enumerate(file_sizes(sizes)):
            _mixed_frame(index + 1, count).to_parquet(folder / f"part-{index:04d}.parquet", index=False)
        _mark(folder, recipe)
    if not _complete(model.parent, recipe):
        model.parent.mkdir(parents=True, exist_ok=True)
        train = _mixed_frame(99, min(sizes.train_rows, 50_000))
        numbers = ["age", "amount", *(f"m{i}" for i in range(8))]
        columns = ColumnTransformer(
            [
                ("onehot", OneHotEncoder(handle_unknown="ignore"), ["country", "device"]),
                ("numbers", make_pipeline(SimpleImputer(), StandardScaler()), numbers),
                ("flags", "passthrough", ["active"]),
            ]
        )
        pipeline = Pipeline([("columns", columns), ("classify", LogisticRegression(max_iter=1000))])
        joblib.dump(pipeline.fit(pd.DataFrame(train[MIXED_FEATURES]), _mixed_labels(train)), model)
        _mark(model.parent, recipe)
    return folder, (model, hashlib.sha256(model.read_bytes()).hexdigest())
