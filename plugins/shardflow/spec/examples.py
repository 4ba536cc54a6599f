"""Generated pipeline specs, varied the way a real repo of them is: for the DAG tests and the
DagBag parse benchmark (``make bench-dags``)."""

from __future__ import annotations

from pathlib import Path

import yaml

__all__ = ["example_spec", "write_example_specs"]

_SCHEDULES = ("@daily", "0 3 * * *", "30 */6 * * *", "@weekly", None, "asset")
_FORMATS = ("parquet", "csv", "csv.gz", "jsonl", "jsonl.gz")


def example_spec(index: int, bucket: str = "shardflow-bench") -> dict[str, object]:
    """Spec number ``index``: every sixth waits for the previous pipeline's predictions."""
    name = f"pipeline-{index:04d}"
    schedule: object = _SCHEDULES[index % len(_SCHEDULES)]
    if schedule == "asset":
        schedule = {"pipeline": f"pipeline-{index - 1:04d}"}
    several_a_day = schedule == "30 */6 * * *" or isinstance(schedule, dict)
    folder = "ts={{ ts_nodash }}" if several_a_day else "dt={{ ds }}"
    return {
        "name": name,
        "description": f"Generated pipeline {index}",
        "owner": f"team-{index % 7}",
        "schedule": schedule,
        "start_date": "2026-01-01",
        "catchup": False,
        "model": {"uri": f"s3://{bucket}/models/{name}/model.joblib", "sha256": f"{index:064x}"},
        "input": {"prefix": f"s3://{bucket}/events/{name}/{folder}/", "format": _FORMATS[index % len(_FORMATS)]},
        "output": {"prefix": f"s3://{bucket}/predictions/{name}/{folder}/", "format": "parquet"},
        "features": [f"f{i}" for i in range(8)] if index % 2 else None,
        "passthrough": ["id"] if index % 3 == 0 else None,
        "compute": {"backend": "local", "instance_type": "ml.m5.xlarge", "instance_count": 1 + index % 4},
        "retries": {"max_attempts": 3, "backoff_seconds": 30},
        "heartbeat_timeout_seconds": 600,
        "tags": [f"team-{index % 7}"],
    }


def write_example_specs(folder: Path, count: int, bucket: str = "shardflow-bench") -> list[Path]:
    """Write ``count`` specs as ``folder/pipeline-NNNN.yaml``; returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        spec = example_spec(index, bucket)
        path = folder / f"{spec['name']}.yaml"
        path.write_text(yaml.safe_dump(spec, sort_keys=False))
        paths.append(path)
    return paths
