"""The jobs page at scale: 10,000 jobs in the job table (a moto server on 127.0.0.1), then the
first page of the table as the Shardflow page serves it: how many DynamoDB calls it makes, and
how long the query and the HTML take on the server, as the median of repeated rounds.

    python bench/status_page.py [--jobs 10000] [--rounds 20]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()

    import boto3
    from support.records import sample_job

    from shardflow.airflow.ui.pages import jobs_page
    from shardflow.aws.job_items import job_item, job_key
    from shardflow.aws.job_queries import JobQuery
    from shardflow.aws.jobstore import JobStore
    from shardflow.local.moto import aws_environment, moto_server

    with moto_server() as moto:
        env = aws_environment(moto.endpoint_url)
        client = boto3.client(
            "dynamodb",
            endpoint_url=moto.endpoint_url,
            region_name=env["AWS_DEFAULT_REGION"],
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        )
        store = JobStore(client, "bench-jobs")
        store.create_table()
        started = time.perf_counter()
        stamp = "2026-11-30T00:00:00.000000Z"
        items = []
        for n in range(args.jobs):
            record = sample_job(f"bench-{n:06d}", "bench", pipeline=f"p{n % 20}", files_total=24)
            created = f"2026-11-{1 + n % 28:02d}T{n % 24:02d}:00:{n % 60:02d}.{n:06d}Z"
            items.append(
                {
                    **job_item(record),
                    **job_key(record.job_id),
                    "created_at": {"S": created},
                    "updated_at": {"S": stamp},
                }
            )
        for start in range(0, len(items), 25):
            client.batch_write_item(
                RequestItems={"bench-jobs": [{"PutRequest": {"Item": i}} for i in items[start : start + 25]]}
            )
        print(f"seeded {args.jobs:,} jobs in {time.perf_counter() - started:.0f} s")

        calls: list[str] = []
        client.meta.events.register(
            "before-parameter-build.dynamodb", lambda params, model, **_: calls.append(model.name)
        )
        links = {"job": "jobs/{job_id}", "run": "../dags/{dag_id}/runs/{run_id}"}
        queries, renders = [], []
        for _ in range(args.rounds):
            calls.clear()
            begin = time.perf_counter()
            page = store.query_jobs(JobQuery(limit=50))
            middle = time.perf_counter()
            html = jobs_page(page.jobs, {}, page.cursor, links)
            queries.append(middle - begin)
            renders.append(time.perf_counter() - middle)
        print(f"first page: {len(page.jobs)} jobs, {len(html):,} bytes of HTML, DynamoDB calls per page: {calls}")
        # moto answers a Query by walking every item of the table in Python, so its time grows with
        # the table; DynamoDB reads only the page from the index. The page's own work is the HTML.
        print(f"median of {args.rounds}: the Query {ms(queries)} (moto), the HTML {ms(renders)}")


if __name__ == "__main__":
    main()
