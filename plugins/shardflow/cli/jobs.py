"""``shardflow jobs list | show | watch | cancel | reconcile``: the job table for a person (rich tables and bars)
and for scripts (``--json``). ``shardflow jobs --pipeline P``, the form before subcommands, lists."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Sequence
from datetime import date
from typing import TYPE_CHECKING, Any

from shardflow.core.record import JobRecord, JobStatus
from shardflow.errors import JobConflict, JobNotFound, ShardflowError

if TYPE_CHECKING:
    from shardflow.aws.jobstore import JobStore

__all__ = ["DEFAULT_LIMIT", "jobs_argv", "register"]

DEFAULT_LIMIT = 20
#: A stop that meets another writer (a heartbeat does not count; a status change does) reads the
#: job again and decides again, this many times at most.
_STOP_TRIES = 3


def jobs_argv(argv: Sequence[str]) -> list[str]:
    """``jobs`` without a subcommand (``jobs``, ``jobs --pipeline P``, as before subcommands
    existed) is ``jobs list``; every other command line is returned as it is."""
    argv = list(argv)
    if argv[:1] == ["jobs"] and (len(argv) == 1 or (argv[1].startswith("-") and argv[1] not in ("-h", "--help"))):
        return ["jobs", "list", *argv[1:]]
    return argv


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a day: write it YYYY-MM-DD, e.g. 2026-01-31") from None


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give a number of seconds above 0, e.g. 2 or 0.5")
    return value


def _store(args: argparse.Namespace) -> JobStore:
    import boto3

    from shardflow.aws.jobstore import JobStore
    from shardflow.spec.settings import Settings

    return JobStore(boto3.client("dynamodb"), args.table or Settings.from_env().job_table)


def _get_job(store: JobStore, args: argparse.Namespace) -> JobRecord:
    try:
        return store.get_job(args.job_id)
    except JobNotFound as error:
        table = f" --table {shlex.quote(args.table)}" if args.table else ""
        raise JobNotFound(f"{error}: `shardflow jobs list{table}` lists its newest jobs") from None


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2))


def _next_page(args: argparse.Namespace, cursor: str) -> str:
    """The command line of the next page: this one with the cursor."""
    words = ["shardflow", "jobs", "list"]
    for flag in ("pipeline", "status", "since", "until", "table"):
        if getattr(args, flag):
            words += [f"--{flag}", str(getattr(args, flag))]
    if args.limit != DEFAULT_LIMIT:
        words += ["--limit", str(args.limit)]
    return shlex.join([*words, "--cursor", cursor])


def _list(args: argparse.Namespace) -> int:
    from shardflow.aws.job_queries import JobQuery
    from shardflow.cli.job_views import job_json, jobs_table, terminal

    if args.since and args.until and args.since > args.until:
        raise ShardflowError(f"--since {args.since} is after --until {args.until}: no job can match")
    store = _store(args)
    status = JobStatus(args.status) if args.status else None
    page = store.query_jobs(
        JobQuery(
            pipeline=args.pipeline,
            status=status,
            since=args.since,
            until=args.until,
            limit=args.limit,
            cursor=args.cursor,
        )
    )
    if args.json:
        _print_json({"jobs": [job_json(r) for r in page.jobs], "cursor": page.cursor})
        return 0
    console = terminal()
    if page.jobs:
        console.print(jobs_table(page.jobs))
    else:
        which = [f"{name} {value}" for name, value in (("pipeline", args.pipeline), ("status", args.status)) if value]
        console.print(f"no jobs in table {store.table}" + (f" for {' and '.join(which)}" if which else ""))
    if page.cursor:
        console.print(f"more jobs: {_next_page(args, page.cursor)}", style="dim", soft_wrap=True)
    return 0


def _show(args: argparse.Namespace) -> int:
    from shardflow.cli.job_views import file_json, files_failed_first, job_detail, job_json, terminal, units_json

    store = _store(args)
    record = _get_job(store, args)
    files = store.list_files(record.job_id)
    units = store.list_units(record.job_id) if record.dynamic else []
    if args.json:
        files_json = [file_json(f) for f in files_failed_first(files)]
        _print_json(
            {"job": job_json(record), "files": files_json, "units": units_json(units) if record.dynamic else None}
        )
    else:
        terminal().print(job_detail(record, files, file_limit=args.files, units=units))
    return 0


def _watch(args: argparse.Namespace) -> int:
    from shardflow.cli.job_views import terminal
    from shardflow.cli.job_watch import watch_job

    try:
        store = _store(args)
        _get_job(store, args)
        return watch_job(store, args.job_id, terminal(), interval=args.interval, as_json=args.json)
    except KeyboardInterrupt:
        # Watching is only looking: the job goes on, and Ctrl-C is the way to stop looking.
        print(f"stopped watching {args.job_id}; the job goes on (`shardflow jobs cancel` stops it)", file=sys.stderr)
        return 130


def _user() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no login name and no USER variable, as in some containers
        return "unknown"


def _stop(args: argparse.Namespace) -> int:
    from shardflow.cli.job_views import job_json, terminal
    from shardflow.compute import get_backend
    from shardflow.core.lifecycle import stop_job

    store = _store(args)
    before = _get_job(store, args)
    by = f"cli:{_user()}"
    for tries in range(1, _STOP_TRIES + 1):
        try:
            after = stop_job(before.job_id, store, get_backend(before.backend), by)
            break
        except JobConflict:
            if tries == _STOP_TRIES:
                raise
            before = store.get_job(before.job_id)
    stopped = after.status is JobStatus.CANCELLED and before.status is not JobStatus.CANCELLED
    if args.json:
        _print_json({"stopped": stopped, "was": str(before.status), "job": job_json(after)})
        return 0
    console = terminal()
    if stopped:
        console.print(f"job {after.job_id} is [yellow]CANCELLED[/] (it was {before.status})")
        console.print(after.error or f"stopped by {by}", markup=False)
    elif after.status is JobStatus.CANCELLED:
        console.print(f"job {after.job_id} was cancelled already, by {after.stopped_by or 'an unknown user'}")
    else:
        console.print(f"job {after.job_id} has {after.status} already: nothing to stop")
    return 0


def _reconcile(args: argparse.Namespace) -> int:
    from shardflow.cli.reconcile import run_reconcile

    return run_reconcile(args, _store(args))


def _common(parser: argparse.ArgumentParser, job_id: bool = True, json_help: str = "print JSON, for scripts") -> None:
    if job_id:
        parser.add_argument("job_id", metavar="JOB_ID", help="the job's id, as `shardflow jobs list` shows it")
    parser.add_argument("--table", help="the job table (default: $SHARDFLOW_JOB_TABLE or shardflow-jobs)")
    parser.add_argument("--json", action="store_true", help=json_help)


def register(commands: Any) -> None:
    """Add ``jobs`` and its subcommands to the ``shardflow`` parser (call :func:`jobs_argv` on the
    command line first, so that the old ``jobs --pipeline P`` still lists)."""
    jobs = commands.add_parser(
        "jobs",
        help="list, show, watch, cancel and reconcile jobs of the job table",
        description="Jobs of the job table. `shardflow jobs --pipeline P` is `shardflow jobs list --pipeline P`.",
    )
    sub = jobs.add_subparsers(dest="jobs_command", required=True)
    listing = sub.add_parser("list", help="jobs newest first: every job, a pipeline's, or those in a status")
    listing.add_argument("--pipeline", help="only this pipeline's jobs")
    listing.add_argument("--status", type=str.upper, choices=[s.value for s in JobStatus], help="only jobs in it")
    listing.add_argument("--since", type=_day, metavar="YYYY-MM-DD", help="created on or after this day (UTC)")
    listing.add_argument("--until", type=_day, metavar="YYYY-MM-DD", help="created on or before this day (UTC)")
    listing.add_argument("--limit", type=int, default=DEFAULT_LIMIT, help=f"jobs a page, 1 to 200 ({DEFAULT_LIMIT})")
    listing.add_argument("--cursor", help="start after the previous page: the cursor it printed")
    _common(listing, job_id=False)
    listing.set_defaults(run=_list)
    show = sub.add_parser("show", help="one job: its model, prefixes, attempts and files, the failed ones first")
    _common(show)
    show.add_argument("--files", type=int, default=100, metavar="N", help="print at most N files (0: all; 100)")
    show.set_defaults(run=_show)
    watch = sub.add_parser("watch", help="a live progress bar until the job ends; exit 0 only if it succeeded")
    _common(watch, json_help="print the job as JSON each time it moves, one object a line")
    watch.add_argument("--interval", type=_seconds, default=2.0, metavar="S", help="seconds between reads (2)")
    watch.set_defaults(run=_watch)
    stop = sub.add_parser(
        "cancel", aliases=["stop"], help="stop the job's processing job and mark the job CANCELLED (alias: stop)"
    )
    _common(stop)
    stop.set_defaults(run=_stop)
    settle = sub.add_parser(
        "reconcile",
        help="settle the jobs whose owner is gone: silent past their heartbeat timeout, no processing job running",
    )
    settle.add_argument("--pipeline", help="only this pipeline's jobs")
    _common(settle, job_id=False)
    settle.set_defaults(run=_reconcile)
