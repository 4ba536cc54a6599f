"""Sharded against dynamic distribution on real jobs: the local backend's instances, a moto server
on 127.0.0.1 for S3 and the DynamoDB job table, an XGBoost model and Parquet inputs, each job
driven through prepare, submit, settle (advance_job) and publish as the DAG drives it.

    python bench/distribution.py [--rounds 3] [--scale 1.0] [--output bench/RESULTS-distribution.md]

Cases (every instance runs one worker, SHARDFLOW_LOCAL_WORKERS_PER_INSTANCE=1):

- A: 24 files whose sizes cycle 1x/2x/3x/5x in key order; one instance (the whole work), sharded
  over 2 and dynamic over 2, against the balanced ideal (one instance's time / 2).
- B: one Parquet object of many row groups; one instance, and dynamic over 2 with split_objects.
- C: dynamic over 2 on A's files with a 10 s lease; one instance is killed (SIGKILL) mid-job.
- D: 24 files of one size, sharded over 2 against dynamic over 2: what dynamic costs when there is
  nothing to even out, the figure behind ``AUTO_THRESHOLD``.

The methods of a case are interleaved round by round; only ratios within one run count (absolute
times on a shared machine swing by several times from one run to the next).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.datasets import FEATURES, Sizes, ensure_models
from bench.distribution_report import KILLED, report

RESULTS = Path(__file__).with_name("RESULTS-distribution.md")
DATA = Path(__file__).with_name("data") / "distribution"
#: A heavier XGBoost than the main benchmark's, so that a job's work is tens of seconds of
#: prediction over inputs that moto holds in memory without trouble.
MODEL_SIZES = Sizes(train_rows=20_000, trees=4000, depth=8)
CYCLE = (1, 2, 3, 5)
BUCKET = "bench"
LEASE_C = 10

_CLAIMS = re.compile(
    r"(algo-\d+): (\d+) units, (\d+) rows, busy ([\d.]+) s; DynamoDB requests: (\d+) claims \((\d+) taken by "
    r"others\), (\d+) lists, (\d+) renewals, (\d+) results, (\d+) reads"
)
_FILES = re.compile(r"(algo-\d+): (\d+) files \((\d+) failed\), (\d+) rows in ([\d.]+) s")


def _table(first_id: int, rows: int, seed: int) -> pa.Table:
    x = np.random.default_rng(seed).standard_normal((rows, len(FEATURES)), dtype=np.float32)
    columns = {"id": pa.array(np.arange(first_id, first_id + rows, dtype=np.int64))}
    return pa.table(columns | {name: pa.array(x[:, j]) for j, name in enumerate(FEATURES)})


def _upload(s3: Any, prefix: str, row_counts: list[int], row_group: int | None = None, name: str = "part") -> int:
    """Upload one Parquet object per count under ``prefix`` (ids 0..total-1 in key order)."""
    first = 0
    for index, rows in enumerate(row_counts):
        buffer = io.BytesIO()
        pq.write_table(_table(first, rows, index + 1), buffer, row_group_size=row_group or rows)
        key = f"{prefix}{name}-{index:04d}.parquet" if len(row_counts) > 1 else f"{prefix}{name}.parquet"
        s3.put_object(Bucket=BUCKET, Key=key, Body=buffer.getvalue())
        first += rows
    return first


class Bench:
    """The moto server's clients, the job table, the local backend and the model, for every run."""

    def __init__(self, endpoint: str, root: Path, model: tuple[Path, str], moto_pid: int) -> None:
        import boto3

        from shardflow.aws.jobstore import JobStore
        from shardflow.aws.s3 import S3ObjectStore
        from shardflow.compute.local import LocalBackend
        from shardflow.local.moto import aws_environment

        self.s3 = boto3.client("s3")
        self.s3.create_bucket(Bucket=BUCKET)
        self.dynamodb = boto3.client("dynamodb")
        self.store = JobStore(self.dynamodb, "bench-jobs")
        self.objects = S3ObjectStore(self.s3)
        self.backend = LocalBackend(root=root, aws_env=aws_environment(endpoint), die_with_caller=True)
        self.root = root
        path, self.model_sha = model
        self.s3.upload_file(str(path), BUCKET, "models/xgboost.joblib")
        self.runs = 0
        self.moto_pid = moto_pid
        self.last_job = ""
        self.killed: dict[str, Any] = {}

    def job(self, inputs: str, instances: int, distribution: str, **compute: Any) -> Any:
        from shardflow.core.job import JobSpec

        self.runs += 1
        return JobSpec.model_validate(
            {
                "pipeline": "bench",
                "dag_id": "shardflow_bench_distribution",
                "run_id": f"bench__{self.runs:03d}__{time.time_ns()}",
                "model": {"uri": f"s3://{BUCKET}/models/xgboost.joblib", "sha256": self.model_sha},
                "input": {"prefix": f"s3://{BUCKET}/{inputs}"},
                "output": {"prefix": f"s3://{BUCKET}/out/{self.runs:03d}/"},
                "compute": {
                    "backend": "local",
                    "instance_count": instances,
                    "max_runtime_seconds": 1800,
                    "distribution": distribution,
                    **compute,
                },
                "retries": {"max_attempts": 2, "backoff_seconds": 0},
            }
        )

    def run(
        self, job: Any, total_rows: int, during: Callable[[str, Path, float], None] | None = None
    ) -> dict[str, Any]:
        """Prepare, submit and settle one job, publish it and read every output row back."""
        from shardflow.aws.jobstore import JobStore
        from shardflow.core.lifecycle import advance_job, submit_job
        from shardflow.core.prepare import prepare_job
        from shardflow.core.publish import publish_job

        # A table of its own per job: moto's queries slow down as a table grows, DynamoDB's do not.
        self.store = JobStore(self.dynamodb, f"bench-jobs-{self.runs:03d}")
        self.store.create_table()
        record = prepare_job(job, self.store, self.objects)
        load, moto_cpu = os.getloadavg()[0], _cpu_seconds(self.moto_pid)
        started = time.monotonic()
        record = submit_job(record.job_id, self.store, self.backend)
        job_dir = self.root / record.current_processing_job
        if during is not None:
            during(record.job_id, job_dir, started)
        while (progress := advance_job(record.job_id, self.store, self.backend, self.objects)).summary is None:
            time.sleep(0.2)
        wall = time.monotonic() - started
        self.last_job = record.job_id
        moto_cpu = _cpu_seconds(self.moto_pid) - moto_cpu
        publish_job(record.job_id, self.store, self.objects)
        final = self.store.get_job(record.job_id)
        self._check_rows(final.output_prefix, total_rows)
        status = json.loads((job_dir / "status.json").read_text())
        units = self.store.list_units(record.job_id) if final.dynamic else []
        return {
            "job_id": record.job_id,
            "wall": wall,
            "moto_cpu": moto_cpu,
            "load": load,
            "runner_seconds": status.get("seconds"),
            "status": status["state"],
            "attempt": final.attempt,
            "distribution": final.distribution,
            "imbalance": final.predicted_imbalance,
            "instances": _instances(job_dir),
            "units": len(units),
            "unit_seconds": [u.seconds or 0.0 for u in units],
            "reclaimed": [u.index for u in units if u.claims > 1],
            "reclaimed_by": sorted({u.host or "" for u in units if u.claims > 1}),
            "rows": progress.summary["rows"],
        }

    def _check_rows(self, output_prefix: str, total_rows: int) -> None:
        """Every input row exactly once in the published outputs (ids are 0..total-1)."""
        prefix = output_prefix.removeprefix(f"s3://{BUCKET}/")
        manifest = json.loads(self.s3.get_object(Bucket=BUCKET, Key=prefix + "_manifest.json")["Body"].read())
        ids = []
        for entry in manifest["files"]:
            body = self.s3.get_object(Bucket=BUCKET, Key=prefix + entry["output"])["Body"].read()
            ids.append(pq.read_table(pa.BufferReader(body), columns=["id"]).column("id").to_numpy())
        every = np.sort(np.concatenate(ids))
        if len(every) != total_rows or not np.array_equal(every, np.arange(total_rows)):
            raise AssertionError(f"{output_prefix}: {len(every)} rows published, not each of {total_rows} once")


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds process ``pid`` has used (the moto server's, serving a job)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _instances(job_dir: Path) -> dict[str, dict[str, float]]:
    """Each instance's units, rows, busy seconds (its worker's, predicting), span (from its first
    task to its last result) and DynamoDB requests, from its script.log."""
    found: dict[str, dict[str, float]] = {}
    for log in sorted(job_dir.glob("algo-*/script.log")):
        text = log.read_text(errors="replace")
        if match := _FILES.search(text):
            host, files, _, rows, seconds = match.groups()
            found[host] = {"units": int(files), "rows": int(rows), "busy": float(seconds), "span": float(seconds)}
            found[host] |= {"requests": 0, "taken": 0}
        if match := _CLAIMS.search(text):
            host, units, rows, busy, *requests = match.groups()
            claims, taken, lists, renewals, results, reads = (int(r) for r in requests)
            found[host] = found.get(host, {}) | {
                "units": int(units),
                "rows": int(rows),
                "busy": float(busy),
                "requests": claims + lists + renewals + results + reads,
                "taken": taken,
            }
    return found


def _kill_mid_job(bench: Bench, expected: float) -> Callable[[str, Path, float], None]:
    """Kill -9 algo-2's script once about half of the job's expected time has passed and it holds
    a unit."""
    from shardflow.core.units import UnitState

    def during(job_id: str, job_dir: Path, started: float) -> None:
        deadline = started + max(5.0, expected / 2)
        while True:
            held = [u for u in bench.store.list_units(job_id) if u.host == "algo-2" and u.state is UnitState.LEASED]
            pid_file = job_dir / "algo-2" / "script.pid"
            if held and pid_file.exists() and time.monotonic() >= deadline:
                break
            time.sleep(0.2)
        os.kill(int(pid_file.read_text()), signal.SIGKILL)
        bench.killed = {"at": time.monotonic() - started, "unit": [u.index for u in held]}

    return during


#: The code a dynamic job runs: fingerprinted before and after the run, so that a report says so
#: when the code changed under it (each job starts fresh processes, which import it anew).
CODE = [
    "plugins/shardflow/processing/claims.py",
    "plugins/shardflow/processing/pool.py",
    "plugins/shardflow/processing/script.py",
    "plugins/shardflow/aws/job_units.py",
    "plugins/shardflow/compute/local_runner.py",
    "plugins/shardflow/core/units.py",
]


def code_version() -> str:
    """The commit, and a digest of the dynamic path's files as they are now (edits included)."""
    repo = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256(b"".join((repo / path).read_bytes() for path in CODE)).hexdigest()[:12]
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    return f"{commit}, dynamic path {digest}"


def measure(rounds: int, scale: float) -> dict[str, Any]:
    from shardflow.local.moto import aws_environment, moto_server

    model = ensure_models(DATA, MODEL_SIZES)["xgboost"]
    unit = int(12_000 * scale)
    rows_b, groups_b = int(600_000 * scale), 48
    rows_d = [int(25_000 * scale)] * 24
    results: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-distribution-") as tmp, moto_server() as moto:
        os.environ.update(aws_environment(moto.endpoint_url))
        os.environ["SHARDFLOW_LOCAL_ROOT"] = tmp
        os.environ["SHARDFLOW_LOCAL_WORKERS_PER_INSTANCE"] = "1"
        bench = Bench(moto.endpoint_url, Path(tmp), model, moto.pid)
        total_a = _upload(bench.s3, "in-a/", [unit * CYCLE[i % 4] for i in range(24)])
        total_b = _upload(bench.s3, "in-b/", [rows_b], row_group=rows_b // groups_b, name="day")
        total_d = _upload(bench.s3, "in-d/", rows_d)
        cases = {
            "A": [
                ("single", lambda: bench.job("in-a/", 1, "sharded"), total_a),
                ("sharded", lambda: bench.job("in-a/", 2, "sharded"), total_a),
                ("dynamic", lambda: bench.job("in-a/", 2, "dynamic"), total_a),
            ],
            "B": [
                ("single", lambda: bench.job("in-b/", 1, "sharded"), total_b),
                ("dynamic", lambda: bench.job("in-b/", 2, "dynamic", split_objects=True), total_b),
            ],
            "D": [
                ("sharded", lambda: bench.job("in-d/", 2, "sharded"), total_d),
                ("dynamic", lambda: bench.job("in-d/", 2, "dynamic"), total_d),
            ],
        }
        for round_ in range(rounds):
            for case, methods in cases.items():
                # Each round in turn forwards and backwards: neither method always runs first.
                for method, make, total in methods if round_ % 2 == 0 else methods[::-1]:
                    run = bench.run(make(), total) | {"round": round_ + 1}
                    results.setdefault(f"{case} {method}", []).append(run)
                    print(f"[{round_ + 1}/{rounds}] {case} {method}: {_brief(run)}", flush=True)
            # C: killed at about half the time this round's undisturbed dynamic run of A took.
            expected = results["A dynamic"][-1]["wall"]
            job = bench.job("in-a/", 2, "dynamic", lease_seconds=LEASE_C)
            run = bench.run(job, total_a, _kill_mid_job(bench, expected)) | bench.killed | {"round": round_ + 1}
            results.setdefault(KILLED, []).append(run)
            print(f"[{round_ + 1}/{rounds}] {KILLED}: {_brief(run)}", flush=True)
        latency = _request_latency(bench, bench.last_job)
    return {
        "results": results,
        "latency": latency,
        "rows": {"A": total_a, "B": total_b, "D": total_d},
        "unit_rows": unit,
        "groups_b": groups_b,
        "model": f"XGBoost classifier ({MODEL_SIZES.trees} trees, depth {MODEL_SIZES.depth})",
        "lease": LEASE_C,
    }


def _request_latency(bench: Bench, job_id: str, count: int = 40) -> float:
    """Mean seconds of one DynamoDB request to moto here: a GetItem of the job, a Query of its units."""
    started = time.perf_counter()
    for _ in range(count // 2):
        bench.store.get_job(job_id)
        bench.store.list_units(job_id)
    return (time.perf_counter() - started) / count


def _brief(run: dict[str, Any]) -> str:
    hosts = ", ".join(
        f"{h} {i['units']:.0f} units {i['rows']:,.0f} rows busy {i['busy']:.1f} s" for h, i in run["instances"].items()
    )
    return f"{run['wall']:.1f} s ({run['status']}, attempt {run['attempt']}); {hosts}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--scale", type=float, default=1.0, help="rows per case, as a multiple of the defaults")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--from-json", type=Path, help="write the report of a run's saved figures again")
    args = parser.parse_args()
    if args.from_json:
        measured = json.loads(args.from_json.read_text())
    else:
        started, code = time.monotonic(), code_version()
        measured = measure(args.rounds, args.scale)
        measured["code"] = code if code == code_version() else f"{code}, CHANGED during the run to {code_version()}"
        measured |= {"seconds": time.monotonic() - started, "rounds": args.rounds, "scale": args.scale}
        measured["date"] = f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
        (DATA / "last-run.json").write_text(json.dumps(measured, indent=1, default=str))
    report(measured, args.output)
    print(args.output.read_text())


if __name__ == "__main__":
    main()
