"""The ``shardflow`` command line: job status tables, pipeline specs (validate, list, schema,
run one outside Airflow), instance-quota pools, the demo, and the demo's data for a real account."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from shardflow.cli.jobs import jobs_argv
from shardflow.cli.jobs import register as register_jobs_commands
from shardflow.cli.platform import apply_local_platform
from shardflow.cli.platform import register as register_platform_commands
from shardflow.core.status_table import format_table
from shardflow.errors import ShardflowError

__all__ = ["main"]

DEFAULT_PIPELINES = Path("dags") / "pipelines"


def _spec_results(path: Path) -> dict:
    from shardflow.spec import SpecError, check_specs, load_spec
    from shardflow.spec.settings import Settings

    if not path.exists():
        raise SystemExit(f"{path} does not exist: give a spec file or a folder of them (default {DEFAULT_PIPELINES})")
    quotas = Settings.from_env().instance_quotas
    if path.is_dir():
        return check_specs(path, quotas)
    # One file is checked among its siblings, which a `schedule.pipeline` may name.
    siblings = check_specs(path.parent, quotas)
    if path in siblings:
        return {path: siblings[path]}
    try:
        return {path: load_spec(path)}
    except SpecError as error:
        return {path: error}


def _validate(args: argparse.Namespace) -> int:
    from shardflow.spec import SpecError

    results = _spec_results(args.path)
    if not results:
        print(f"no *.yaml specs in {args.path}")
        return 1
    broken = [error for error in results.values() if isinstance(error, SpecError)]
    for path, result in results.items():
        if not isinstance(result, SpecError):
            print(f"ok     {path}  (DAG {result.dag_id})")
    for error in broken:
        print(f"ERROR  {error}", file=sys.stderr)
    print(f"{len(results) - len(broken)} valid, {len(broken)} broken", file=sys.stderr if broken else sys.stdout)
    return 1 if broken else 0


def _schedule_text(schedule: object) -> str:
    from shardflow.spec import AssetSchedule

    if isinstance(schedule, AssetSchedule):
        return f"after pipeline {schedule.pipeline}" if schedule.pipeline else f"asset {schedule.asset}"
    return str(schedule) if schedule else "manual"


def _list(args: argparse.Namespace) -> int:
    from shardflow.spec import SpecError

    rows = []
    for path, spec in _spec_results(args.path).items():
        if isinstance(spec, SpecError):
            rows.append((path.stem, "-", "BROKEN: shardflow pipelines validate", "", "", "", ""))
            continue
        compute = spec.compute
        rows.append(
            (
                spec.name,
                spec.dag_id,
                _schedule_text(spec.schedule),
                f"{spec.input.format} -> {spec.output.format}",
                f"{compute.backend} {compute.instance_count} x {compute.instance_type}",
                spec.owner,
                spec.output.prefix,
            )
        )
    header = ("pipeline", "dag id", "schedule", "formats", "compute", "owner", "output prefix")
    print(format_table(header, rows))
    return 0


def _schema(args: argparse.Namespace) -> int:
    from shardflow.spec import pipeline_json_schema

    text = json.dumps(pipeline_json_schema(), indent=2) + "\n"
    if args.output:
        args.output.write_text(text)
        print(f"wrote {args.output}")
    else:
        print(text, end="")
    return 0


def _run(args: argparse.Namespace) -> int:
    import logging

    import boto3

    from shardflow.aws.jobstore import JobStore
    from shardflow.aws.models import SageMakerModelCatalog
    from shardflow.aws.s3 import S3ObjectStore
    from shardflow.cli.interrupt import JobGuard
    from shardflow.cli.run import run_pipeline
    from shardflow.errors import JobInterrupted
    from shardflow.spec import SpecError, load_spec
    from shardflow.spec.settings import Settings

    try:
        spec = load_spec(args.spec)
    except SpecError as error:
        print(error, file=sys.stderr)
        return 1
    store = JobStore(boto3.client("dynamodb"), args.table or Settings.from_env().job_table)
    try:
        with JobGuard(store, "shardflow run") as guard:
            run_pipeline(
                spec,
                args.date,
                store,
                S3ObjectStore(boto3.client("s3")),
                models=SageMakerModelCatalog(boto3.client("sagemaker")),
                output_prefix=args.output_prefix,
                overwrite=args.overwrite,
                on_job=guard.claim,
            )
    except JobInterrupted as error:  # one line, no traceback: the job is stopped and cancelled
        print(f"shardflow run: {error}", file=sys.stderr)
        return error.exit_code
    except ShardflowError as error:
        # The message names what failed and what to do; the traceback is for debugging only.
        logging.getLogger("shardflow.cli").debug("shardflow run %s failed", args.spec, exc_info=error)
        print(f"FAILED: {error}", file=sys.stderr)
        return 1
    return 0


def _pools_sync(args: argparse.Namespace) -> int:
    from shardflow.airflow.pools import sync_pools
    from shardflow.spec.quotas import parse_quotas
    from shardflow.spec.settings import Settings

    quotas = parse_quotas(",".join(args.quota)) if args.quota else dict(Settings.from_env().instance_quotas)
    if not quotas:
        print("no quotas: pass --quota ml.m5.xlarge=20 or set SHARDFLOW_INSTANCE_QUOTAS", file=sys.stderr)
        return 1
    for name, slots in sync_pools(quotas).items():
        print(f"pool {name}: {slots} slot(s), deferred tasks counted")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from shardflow.local.demo import run_demo

    return run_demo()


def _seed_demo(args: argparse.Namespace) -> int:
    import hashlib

    import boto3

    from shardflow.core.s3uri import S3Uri
    from shardflow.local.demo_data import demo_dataset, train_demo_model, upload_dataset

    root = S3Uri.parse(args.prefix).as_prefix()
    s3 = boto3.client("s3")
    model = train_demo_model()
    model_uri = root.join("models", "demo", "model.joblib")
    s3.put_object(Bucket=model_uri.bucket, Key=model_uri.key, Body=model)
    print(f"model:  {model_uri}  (sha256 {hashlib.sha256(model).hexdigest()})")
    inputs = root.join("events", f"dt={args.date}").as_prefix()
    tables = demo_dataset()
    # Last, as a producer marks its input complete: the demo spec's input.wait waits for it.
    upload_dataset(s3, str(inputs), tables, marker="_SUCCESS")
    rows = sum(t.num_rows for t in tables.values())
    print(f"inputs: {inputs}  ({len(tables)} Parquet files, {rows:,} rows, then _SUCCESS)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="shardflow", description="Batch inference over S3, run by Airflow.")
    commands = parser.add_subparsers(dest="command", required=True)
    register_jobs_commands(commands)
    pipelines = commands.add_parser("pipelines", help="check and list pipeline specs").add_subparsers(
        dest="pipelines_command", required=True
    )
    for name, handler, text in (
        ("validate", _validate, "check every spec (exit 1 naming each bad file and field)"),
        ("list", _list, "one line per spec: schedule, formats, compute, output"),
    ):
        sub = pipelines.add_parser(name, help=text)
        sub.add_argument("path", nargs="?", type=Path, default=DEFAULT_PIPELINES, help="a spec or a folder of them")
        sub.set_defaults(run=handler)
    schema = pipelines.add_parser("schema", help="print the JSON Schema of a spec, for editors")
    schema.add_argument("--output", type=Path, help="write it here instead (e.g. dags/pipelines/pipeline.schema.json)")
    schema.set_defaults(run=_schema)
    one = commands.add_parser("run", help="run one pipeline's job outside Airflow, for debugging")
    one.add_argument("spec", type=Path, help="the spec file")
    one.add_argument("--date", required=True, help="the run's date (YYYY-MM-DD), rendered into the prefixes")
    one.add_argument("--output-prefix", help="write here instead of the spec's output prefix")
    one.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the outputs another job published under the output prefix (else the run is refused)",
    )
    one.add_argument("--table", help="the job table (default: $SHARDFLOW_JOB_TABLE or shardflow-jobs)")
    one.set_defaults(run=_run)
    pools = commands.add_parser("pools", help="Airflow pools that hold jobs to the instance quotas")
    sync = pools.add_subparsers(dest="pools_command", required=True).add_parser(
        "sync", help="create or resize one pool per instance type (slots = instances, deferred tasks count)"
    )
    sync.add_argument("--quota", action="append", help="TYPE=COUNT (default: $SHARDFLOW_INSTANCE_QUOTAS)")
    sync.set_defaults(run=_pools_sync)
    demo = commands.add_parser("demo", help="run the demo pipeline end to end on a local moto server")
    demo.set_defaults(run=_demo)
    seed = commands.add_parser(
        "seed-demo", help="upload the demo's model and a day of its inputs to S3 (boto3's credentials and region)"
    )
    seed.add_argument("prefix", help="where to put them, e.g. s3://my-bucket/ (models/ and events/ go under it)")
    seed.add_argument("--date", default="2026-01-01", help="the day of inputs to write (default 2026-01-01)")
    seed.set_defaults(run=_seed_demo)
    register_platform_commands(commands)
    args = parser.parse_args(jobs_argv(sys.argv[1:] if argv is None else argv))
    if args.command not in ("up", "down", "status", "demo"):
        apply_local_platform()
    try:
        return int(args.run(args))
    except ShardflowError as error:  # its message names what failed and what to do
        print(f"shardflow {args.command}: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
