"""What publish's promotion costs: the S3 requests and the seconds to verify and promote a job's
staged outputs (server-side CopyObject with SHA-256, then _manifest.json, _SUCCESS and the
staging's deletion), against a moto server on 127.0.0.1.

    python bench/promotion.py [--cases 16x64 1000x0.1] [--output bench/RESULTS-promotion.md]

A case ``NxM`` is N staged output objects of M MB each (random bytes: publish never parses them).
Each case is a real job record (SUCCEEDED, one attempt) in a moto DynamoDB table, its outputs and
per-instance manifests staged as an attempt uploads them; the upload of the same bytes is timed
too, as the yardstick of what moving them through this machine costs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).with_name("RESULTS-promotion.md")


def _case(text: str) -> tuple[int, float]:
    count, _, megabytes = text.partition("x")
    return int(count), float(megabytes)


def _stage(s3: Any, store: Any, bucket: str, count: int, size: int, job_id: str) -> tuple[float, int]:
    """A SUCCEEDED job whose one attempt staged ``count`` outputs of ``size`` bytes; returns the
    seconds the upload took and the bytes staged."""
    from shardflow.core.job import JobSpec
    from shardflow.core.record import FileRecord, FileStatus, JobRecord, JobStatus
    from shardflow.core.staging import attempt_staging

    job = JobSpec.model_validate(
        {
            "pipeline": "bench",
            "dag_id": "shardflow_bench",
            "run_id": job_id,
            "model": {"uri": f"s3://{bucket}/models/m.joblib", "sha256": "ab" * 32},
            "input": {"prefix": f"s3://{bucket}/in/"},
            "output": {"prefix": f"s3://{bucket}/out/{job_id}/"},
        }
    )
    name = f"{job_id}-a1"
    staging = attempt_staging(job.output.prefix, job_id, 1)
    files, entries, seconds = [], [], 0.0
    block = os.urandom(size)
    for n in range(count):
        key = f"part-{n:05d}.parquet"
        body = block[:-8] + n.to_bytes(8, "big")  # every object its own bytes
        started = time.perf_counter()
        s3.put_object(Bucket=bucket, Key=staging.key + key, Body=body)
        seconds += time.perf_counter() - started
        entries.append({"input": key, "output": key, "rows": 1, "sha256": hashlib.sha256(body).hexdigest()})
        files.append(FileRecord(key, size, FileStatus.SUCCEEDED, rows=1, output_key=key, processing_job=name))
    manifest = {"processing_job": name, "host": "algo-1", "files": entries, "failed": []}
    s3.put_object(Bucket=bucket, Key=f"{staging.key}_manifests/{name}-algo-1.json", Body=json.dumps(manifest))
    record = store.create_job(JobRecord(job_id=job_id, job=job), files)
    record = store.transition(record, JobStatus.SUBMITTED, attempt=1, processing_jobs=[name], attempt_files=count)
    record = store.transition(record, JobStatus.RUNNING)
    store.record_file_results(job_id, files)
    store.transition(record, JobStatus.SUCCEEDED, files_succeeded=count, rows=count)
    return seconds, count * size


def measure(cases: list[str]) -> list[dict[str, Any]]:
    import boto3

    from shardflow.aws.jobstore import JobStore
    from shardflow.aws.s3 import S3ObjectStore
    from shardflow.core.publish import publish_job
    from shardflow.local.moto import aws_environment, moto_server

    rows = []
    with moto_server() as moto:
        os.environ.update(aws_environment(moto.endpoint_url))
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket="bench")
        store = JobStore(boto3.client("dynamodb"), "bench-jobs")
        store.create_table()
        for index, text in enumerate(cases):
            count, megabytes = _case(text)
            job_id = f"bench-{index:04d}"
            upload_seconds, staged = _stage(s3, store, "bench", count, int(megabytes * (1 << 20)), job_id)
            calls: Counter[str] = Counter()
            counted = boto3.client("s3")
            counted.meta.events.register("before-call.s3.*", lambda model, calls=calls, **_: calls.update([model.name]))
            started = time.perf_counter()
            publish_job(job_id, store, S3ObjectStore(counted))
            seconds = time.perf_counter() - started
            gigabytes = staged / (1 << 30)
            rows.append(
                {
                    "case": f"{count} x {megabytes:g} MB",
                    "objects": count,
                    "gigabytes": gigabytes,
                    "seconds": seconds,
                    "seconds_per_gb": seconds / gigabytes,
                    "upload_seconds_per_gb": upload_seconds / gigabytes,
                    "requests": dict(sorted(calls.items())),
                }
            )
            print(rows[-1], flush=True)
    return rows


def report(rows: list[dict[str, Any]], cases: list[str], output: Path) -> None:
    lines = [
        "# Publish's promotion",
        "",
        f"`python bench/promotion.py --cases {' '.join(cases)}`, {datetime.now(UTC):%Y-%m-%d}, "
        f"{os.cpu_count()} cores, moto on 127.0.0.1 sharing the machine. Publish verifies the staged outputs "
        "against the record, claims the prefix (`_manifest.json`), promotes each output with one CopyObject "
        "(SHA-256 computed by the store and compared with the manifest), writes `_SUCCESS` and deletes the "
        "staging. The upload column is the PutObject time of the same bytes, for scale.",
        "",
        "| case | GB | publish (s) | publish (s/GB) | upload (s/GB) | requests |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        requests = ", ".join(f"{name} {count}" for name, count in row["requests"].items())
        lines.append(
            f"| {row['case']} | {row['gigabytes']:.2f} | {row['seconds']:.2f} | {row['seconds_per_gb']:.2f} "
            f"| {row['upload_seconds_per_gb']:.2f} | {requests} |"
        )
    output.write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", default=["16x64", "1000x0.1"], help="NxM: N objects of M MB")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    report(measure(args.cases), args.cases, args.output)
    print(args.output.read_text())


if __name__ == "__main__":
    main()
