"""The ways of doing the benchmark's work that run in the project's environment, one per fresh
process: ``python -m bench.methods METHOD '{json arguments}'`` prints one JSON line at the end."""

from __future__ import annotations

import concurrent.futures as cf
import json
import multiprocessing
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["blog", "ceiling", "ceiling_frame", "io_floor"]


def _cpu() -> float:
    """CPU seconds of this process and of the children it has waited for (a pool's workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _inputs(folder: str) -> list[Path]:
    return sorted(Path(folder).rglob("*.parquet"), key=lambda p: p.stat().st_size, reverse=True)


def ceiling(model: str, inputs: str, features: list[str], workers: int) -> dict[str, Any]:
    """``model.predict`` on every row already in memory as one float32 matrix, on every core."""
    import joblib
    import numpy as np
    import pyarrow.parquet as pq

    matrix = np.concatenate(
        [
            np.column_stack([pq.read_table(p, columns=features).column(f).to_numpy() for f in features])
            for p in _inputs(inputs)
        ]
    )
    loaded = joblib.load(model)
    if "n_jobs" in loaded.get_params():
        loaded.set_params(n_jobs=workers)
    started, cpu = time.perf_counter(), time.process_time()
    loaded.predict(matrix)
    return {"rows": len(matrix), "seconds": time.perf_counter() - started, "cpu": time.process_time() - cpu}


# The DataFrame the forked workers of ``ceiling_frame`` share, and the model they use.
_FRAME: Any = None
_MODEL: Any = None


def _predict_rows(bounds: tuple[int, int]) -> int:
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):  # one worker per core already
        return len(_MODEL.predict(_FRAME.iloc[bounds[0] : bounds[1]]))


def ceiling_frame(model: str, inputs: str, features: list[str], workers: int) -> dict[str, Any]:
    """``model.predict(df)`` on every row already in memory as one DataFrame (as pandas.read_parquet
    reads the folder), split over forked processes, one per core."""
    global _FRAME, _MODEL
    import joblib
    import pandas as pd

    _FRAME = pd.read_parquet(inputs, columns=features)
    _MODEL = joblib.load(model)
    step = -(-len(_FRAME) // workers)
    parts = [(start, min(start + step, len(_FRAME))) for start in range(0, len(_FRAME), step)]
    started, cpu = time.perf_counter(), _cpu()
    with cf.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
        rows = sum(pool.map(_predict_rows, parts))
    return {"rows": rows, "seconds": time.perf_counter() - started, "cpu": _cpu() - cpu}


def _copy(path: Path, into: Path) -> int:
    """Read a file in batches and write them back, as the processing script streams, with no model."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    source = pq.ParquetFile(path, buffer_size=64 << 10, pre_buffer=False)
    with pq.ParquetWriter(into / path.name, source.schema_arrow, use_dictionary=False, compression="snappy") as out:
        for batch in source.iter_batches(batch_size=65536, use_threads=False):
            out.write_table(pa.Table.from_batches([batch]))
    return source.metadata.num_rows


def io_floor(inputs: str, output: str, workers: int) -> dict[str, Any]:
    """pyarrow read and write of every file, no model and no dictionary encoding, files spread
    over forked processes (one per core), the largest first."""
    import pyarrow.parquet  # noqa: F401  (imported before the fork, as the processing script does)

    into = Path(output)
    into.mkdir(parents=True, exist_ok=True)
    files = _inputs(inputs)
    started, cpu = time.perf_counter(), _cpu()
    with cf.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
        rows = sum(pool.map(_copy, files, [into] * len(files)))
    return {"rows": rows, "seconds": time.perf_counter() - started, "cpu": _cpu() - cpu}


# The pattern of the well-known blog post, as it is written there: a process pool over the files,
# each task loading the model and doing its file with pandas.
MODEL_PATH = ""
OUTPUT_DIR = ""
FEATURES: list[str] = []


def predict_file(path: str) -> int:
    import joblib
    import pandas as pd

    model = joblib.load(MODEL_PATH)
    df = pd.read_parquet(path)
    df["prediction"] = model.predict(df[FEATURES])
    df.to_parquet(os.path.join(OUTPUT_DIR, os.path.basename(path)))
    return len(df)


def blog(model: str, inputs: str, output: str, features: list[str], workers: int) -> dict[str, Any]:
    global MODEL_PATH, OUTPUT_DIR, FEATURES
    MODEL_PATH, OUTPUT_DIR, FEATURES = model, output, features
    os.makedirs(output, exist_ok=True)
    files = [str(p) for p in sorted(Path(inputs).rglob("*.parquet"))]
    started, cpu = time.perf_counter(), _cpu()
    with cf.ProcessPoolExecutor(max_workers=workers) as executor:
        rows = sum(executor.map(predict_file, files))
    return {"rows": rows, "seconds": time.perf_counter() - started, "cpu": _cpu() - cpu}


METHODS = {"ceiling": ceiling, "ceiling_frame": ceiling_frame, "io_floor": io_floor, "blog": blog}

if __name__ == "__main__":
    result = METHODS[sys.argv[1]](**json.loads(sys.argv[2]))
    print(json.dumps(result), flush=True)
