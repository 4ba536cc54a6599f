"""How polling scales: N jobs waiting at once, each with a deferred JobTrigger, in one triggerer
event loop. Reports the loop's CPU and the DynamoDB reads (and read units) per minute.

    python bench/trigger_polling.py [--jobs 10 100 1000] [--seconds 60] [--poll 10]

Each N runs in a fresh process (the triggerer) against a moto server on 127.0.0.1. The jobs are
real job records with local processing jobs that stay InProgress, so every trigger keeps polling.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).with_name("RESULTS-triggers.md")
# The job records it seeds are the tests' sample records (tests/support).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def seed(jobs: int, table: str, root: Path, sleeper_pid: int) -> int:
    """Create ``jobs`` RUNNING job records and their InProgress local jobs; returns an item's size."""
    import boto3
    from support.records import sample_job

    from shardflow.aws.jobstore import JobStore
    from shardflow.compute.local import write_status
    from shardflow.core.record import FileRecord, JobStatus

    store = JobStore(boto3.client("dynamodb"), table)
    store.create_table()
    size = 0
    for n in range(jobs):
        record = sample_job(
            f"bench-{n:05d}",
            "bench",
            pipeline=f"bench-{n % 20}",
            run_id=f"scheduled__{n}",
            input_prefix=f"s3://bench/in/dt={n}/",
            output_prefix=f"s3://bench/out/dt={n}/",
            heartbeat_timeout_seconds=86_400,
        )
        record = store.create_job(record, [FileRecord(key=f"part-{i}.parquet", size=1) for i in range(24)])
        name = f"bench-{n:05d}-a1"
        record = store.transition(record, JobStatus.SUBMITTED, attempt=1, processing_jobs=[name], attempt_files=24)
        store.transition(record, JobStatus.RUNNING)
        job_dir = root / name
        job_dir.mkdir(parents=True)
        write_status(job_dir, {"state": "InProgress"})
        (job_dir / "runner.pid").write_text(str(sleeper_pid))
    item = store.client.get_item(TableName=table, Key={"pk": {"S": "JOB#bench-00000"}, "sk": {"S": "JOB"}})["Item"]
    size = sum(len(k) + len(json.dumps(v)) for k, v in item.items())
    return size


async def _poll_all(jobs: int, table: str, root: Path, poll: float, seconds: float, calls: Counter[str]) -> None:
    from aiobotocore.client import AioBaseClient

    from shardflow.airflow.triggers import JobTrigger

    original = AioBaseClient._make_api_call

    async def counted(self: Any, operation: str, params: Any) -> Any:
        calls[operation] += 1
        if operation == "GetItem":
            calls["items"] += 1
        elif operation == "BatchGetItem":
            calls["items"] += sum(len(request["Keys"]) for request in params["RequestItems"].values())
        return await original(self, operation, params)

    AioBaseClient._make_api_call = counted  # type: ignore[method-assign]

    async def one(n: int) -> None:
        trigger = JobTrigger(f"bench-{n:05d}", table, "aws_default", "local", {"root": str(root)}, poll)
        async for event in trigger.run():
            raise RuntimeError(f"job bench-{n:05d} fired {event} while it should keep waiting")

    tasks = [asyncio.create_task(one(n)) for n in range(jobs)]
    await asyncio.sleep(seconds)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def triggerer(args: argparse.Namespace) -> None:
    """The measured process: N triggers in one event loop for a fixed time."""
    root = Path(args.root)
    calls: Counter[str] = Counter()
    warm_up = min(args.poll * 2, 20.0)
    asyncio.run(_poll_all(args.jobs[0], args.table, root, args.poll, warm_up, Counter()))
    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.monotonic()
    asyncio.run(_poll_all(args.jobs[0], args.table, root, args.poll, args.seconds, calls))
    elapsed = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    print(json.dumps({"cpu": cpu, "elapsed": elapsed, "calls": dict(calls)}))


def run(args: argparse.Namespace) -> None:
    from shardflow.local.moto import aws_environment, moto_server

    rows = []
    sleeper = subprocess.Popen(["sleep", "86400"])
    try:
        for jobs in args.jobs:
            with moto_server() as moto, tempfile.TemporaryDirectory() as root:
                env = {**os.environ, **aws_environment(moto.endpoint_url)}
                os.environ.update(aws_environment(moto.endpoint_url))
                item_bytes = seed(jobs, "bench-jobs", Path(root), sleeper.pid)
                command = [sys.executable, __file__, "--triggerer", "--jobs", str(jobs), "--root", root]
                command += ["--seconds", str(args.seconds), "--poll", str(args.poll), "--table", "bench-jobs"]
                out = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
                result = json.loads(out.strip().splitlines()[-1])
                per_minute = 60 / result["elapsed"]
                calls = result["calls"]
                requests = (calls.get("GetItem", 0) + calls.get("BatchGetItem", 0)) * per_minute
                reads = calls.get("items", 0) * per_minute
                units = reads * math.ceil(item_bytes / 4096)  # a strongly consistent read: 1 unit per 4 KB
                rows.append(
                    {
                        "jobs": jobs,
                        "cpu_s_per_min": result["cpu"] * per_minute,
                        "cpu_pct": 100 * result["cpu"] / result["elapsed"],
                        "requests_per_min": requests,
                        "reads_per_min": reads,
                        "rcu_per_min": units,
                        "reads_per_job_min": reads / jobs,
                        "cpu_ms_per_job_min": 1000 * result["cpu"] * per_minute / jobs,
                    }
                )
                print(f"{jobs} jobs: {rows[-1]}", flush=True)
    finally:
        sleeper.kill()
    report(rows, args)


def report(rows: list[dict[str, float]], args: argparse.Namespace) -> None:
    header = (
        "| jobs waiting | triggerer CPU (s/min) | CPU (% of a core) | DynamoDB requests/min | items read/min "
        "| read units/min | reads per job-minute | CPU ms per job-minute |"
    )
    lines = [header, "|" + "---|" * 8]
    for r in rows:
        lines.append(
            f"| {r['jobs']:,} | {r['cpu_s_per_min']:.2f} | {r['cpu_pct']:.1f} | {r['requests_per_min']:,.0f} "
            f"| {r['reads_per_min']:,.0f} | {r['rcu_per_min']:,.0f} | {r['reads_per_job_min']:.2f} "
            f"| {r['cpu_ms_per_job_min']:.1f} |"
        )
    growth = rows[-1]["cpu_ms_per_job_min"] / rows[0]["cpu_ms_per_job_min"] if len(rows) > 1 else 1.0
    verdict = (
        f"CPU per job-minute at {rows[-1]['jobs']:,} jobs is {growth:.2f}x what it is at {rows[0]['jobs']:,}: "
        + ("no worse than linear." if growth <= 1.25 else "WORSE than linear.")
    )
    table = "\n".join(lines)
    print("\n" + table + "\n\n" + verdict)
    RESULTS.write_text(
        "# Trigger polling at scale\n\n"
        f"`python bench/trigger_polling.py --jobs {' '.join(map(str, args.jobs))} --seconds {args.seconds:g} "
        f"--poll {args.poll:g}`, {datetime.now(UTC):%Y-%m-%d}, {os.cpu_count()} cores, moto on 127.0.0.1 "
        "sharing the machine. Each job's record is read once per poll interval "
        f"({args.poll:g} s), strongly consistent; the reads of all waiting jobs are batched into "
        "BatchGetItem calls of up to 100 keys. The local backend is asked every 6 polls.\n\n"
        f"{table}\n\n{verdict}\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--poll", type=float, default=10)
    parser.add_argument("--triggerer", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    parser.add_argument("--table", default="bench-jobs", help=argparse.SUPPRESS)
    args = parser.parse_args()
    triggerer(args) if args.triggerer else run(args)


if __name__ == "__main__":
    main()
