"""The peers, Ray Data and Spark, doing the benchmark's work in their own environment
(``make bench-peers``): ``bench/.peers/bin/python bench/peers.py ray|spark '{json arguments}'``.
Both bind to 127.0.0.1 only; the JSON line printed at the end times the work after startup."""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

__all__ = ["ray_data", "spark"]


def _load(model: str) -> Any:
    import joblib

    loaded = joblib.load(model)
    if "n_jobs" in loaded.get_params():
        loaded.set_params(n_jobs=1)  # the framework runs one task per core
    return loaded


def ray_data(model: str, inputs: str, output: str, features: list[str], workers: int) -> dict[str, Any]:
    """read_parquet, map_batches with an actor class that holds the model, write_parquet."""
    # Ray binds its services to the machine's address on Linux; this switch (meant for laptops)
    # keeps them on the loopback address.
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    import pyarrow.parquet as pq
    import ray

    # Reads need a CPU slot of their own: with one actor per core and no slot left, Ray waits forever.
    ray.init(num_cpus=workers + 1, include_dashboard=False, log_to_driver=False, logging_level="ERROR")

    class Predict:
        def __init__(self) -> None:
            self.model = _load(model)

        def __call__(self, batch: Any) -> Any:
            batch["prediction"] = self.model.predict(batch[features])
            return batch

    started = time.perf_counter()
    (
        ray.data.read_parquet(inputs)
        .map_batches(Predict, batch_format="pandas", batch_size=65536, compute=ray.data.ActorPoolStrategy(size=workers))
        .write_parquet(output)
    )
    seconds = time.perf_counter() - started
    ray.shutdown()
    rows = sum(pq.ParquetFile(os.path.join(output, f)).metadata.num_rows for f in os.listdir(output))
    return {"rows": rows, "seconds": seconds}


def spark(model: str, inputs: str, output: str, features: list[str], workers: int) -> dict[str, Any]:
    """local[N], mapInPandas with an iterator UDF that loads the model once per partition."""
    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ["SPARK_LOCAL_IP"] = "127.0.0.1"
    from pyspark.sql import SparkSession
    from pyspark.sql.types import LongType, StructField, StructType

    session = (
        SparkSession.builder.master(f"local[{workers}]")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.driver.memory", "4g")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")

    def predict(batches: Any) -> Any:
        loaded = _load(model)
        for frame in batches:
            frame["prediction"] = loaded.predict(frame[features])
            yield frame

    started = time.perf_counter()
    frame = session.read.parquet(inputs)
    schema = StructType([*frame.schema.fields, StructField("prediction", LongType())])
    frame.mapInPandas(predict, schema).write.mode("overwrite").parquet(output)
    seconds = time.perf_counter() - started
    rows = session.read.parquet(output).count()
    session.stop()
    return {"rows": rows, "seconds": seconds}


METHODS = {"ray": ray_data, "spark": spark}

if __name__ == "__main__":
    result = METHODS[sys.argv[1]](**json.loads(sys.argv[2]))
    print(json.dumps(result), flush=True)
