"""How ``shardflow jobs`` shows jobs: rich tables and bars for a person, plain dicts for ``--json``.
Pure functions of records; the commands that fetch them are in :mod:`shardflow.cli.jobs`."""

from __future__ import annotations

import os
import sys
from collections.abc import Collection, Sequence
from dataclasses import asdict, fields
from typing import Any

from rich import box
from rich.console import Console, Group, JustifyMethod, RenderableType
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from shardflow.core.artifact import ModelArtifact
from shardflow.core.record import FileRecord, FileStatus, JobRecord, JobStatus
from shardflow.core.status_table import (
    JobProgress,
    UnitsSummary,
    distribution_text,
    format_duration,
    job_progress,
    units_summary,
)
from shardflow.core.units import WorkUnit

__all__ = [
    "STATUS_STYLES",
    "file_json",
    "files_bar",
    "files_failed_first",
    "headline",
    "job_detail",
    "job_json",
    "jobs_table",
    "progress_line",
    "status_text",
    "terminal",
    "units_json",
]

STATUS_STYLES = {
    JobStatus.PENDING: "dim",
    JobStatus.SUBMITTED: "cyan",
    JobStatus.RUNNING: "bold blue",
    JobStatus.SUCCEEDED: "bold green",
    JobStatus.FAILED: "bold red",
    JobStatus.CANCELLED: "yellow",
}
_BAR_STYLES = {JobStatus.SUCCEEDED: "green", JobStatus.FAILED: "red", JobStatus.CANCELLED: "yellow"}
_FILE_STYLES = {FileStatus.FAILED: "bold red", FileStatus.PENDING: "dim", FileStatus.SUCCEEDED: "green"}
_FILE_ORDER = {FileStatus.FAILED: 0, FileStatus.PENDING: 1, FileStatus.SUCCEEDED: 2}
#: Piped output has no terminal width; rich would squeeze a job table into 80 columns.
_PIPE_WIDTH = 200


def terminal(stderr: bool = False) -> Console:
    """A console on stdout (or stderr): the terminal's width, or a wide one when piped."""
    stream = sys.stderr if stderr else sys.stdout
    wide = not stream.isatty() and "COLUMNS" not in os.environ
    return Console(stderr=stderr, highlight=False, width=_PIPE_WIDTH if wide else None)


def status_text(status: JobStatus) -> Text:
    return Text(str(status), style=STATUS_STYLES[status])


def _time(value: str | None) -> str:
    """``2026-01-01T00:00:05.120000Z`` -> ``2026-01-01 00:00:05``."""
    return value[:19].replace("T", " ") if value else "-"


def _clock(value: str | None) -> str:
    """``2026-01-01T00:00:05.120000Z`` -> ``00:00:05``: within a job, the day is the created one's."""
    return value[11:19] if value else "-"


def _rate(progress: JobProgress) -> str:
    rate = progress.rows_per_second
    return "-" if rate is None else f"{rate:,.0f}"


def files_bar(record: JobRecord, progress: JobProgress, width: int) -> ProgressBar:
    style = _BAR_STYLES.get(record.status, "blue")
    return ProgressBar(
        total=max(progress.files_total, 1),
        completed=progress.files_done if progress.files_total else 1,
        width=width,
        complete_style=style,
        finished_style=style,
    )


def _table(columns: Sequence[str], right: Collection[str] = (), fold: Collection[str] = (), title: str = "") -> Table:
    """A table with a rule under its header and no frame; ``right`` columns hold numbers, and
    ``fold`` columns break long values over lines instead of cutting them."""
    table = Table(title=title or None, title_justify="left", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for name in columns:
        justify: JustifyMethod = "right" if name in right else "left"
        table.add_column(
            name, justify=justify, no_wrap=name not in fold, overflow="fold" if name in fold else "ellipsis"
        )
    return table


def jobs_table(records: Sequence[JobRecord]) -> Table:
    """One row per job, in the order given (the store's: newest first)."""
    columns = "job id|pipeline|status|attempt|progress|files|rows|rows/s|duration|compute|created (UTC)"
    table = _table(columns.split("|"), right=("attempt", "files", "rows", "rows/s", "duration"))
    for r in records:
        progress = job_progress(r)
        compute = r.job.compute
        table.add_row(
            r.job_id,
            r.pipeline,
            status_text(r.status),
            f"{r.attempt}/{r.max_attempts}",
            files_bar(r, progress, width=12),
            progress.files_text,
            f"{progress.rows:,}",
            _rate(progress),
            format_duration(progress.duration_seconds),
            f"{compute.instance_count} x {compute.instance_type}",
            _time(r.created_at),
        )
    return table


def progress_line(record: JobRecord, bar_width: int = 40) -> Table:
    """The bar and the counts on one line: what ``watch`` redraws and ``show`` prints."""
    progress = job_progress(record)
    line = Table.grid(padding=(0, 2))
    parts: list[RenderableType] = [
        files_bar(record, progress, width=bar_width),
        f"{progress.files_text} files",
        f"{progress.fraction:.0%}",
        f"{progress.rows:,} rows",
        f"{_rate(progress)} rows/s",
        format_duration(progress.duration_seconds),
    ]
    for _ in parts:
        line.add_column(no_wrap=True)
    line.add_row(*parts)
    return line


def headline(record: JobRecord) -> Text:
    """``demo-12a00ed950b2  RUNNING  attempt 1/3  demo-12a00ed950b2-a1``."""
    text = Text.assemble((record.job_id, "bold"), "  ", status_text(record.status))
    text.append(f"  attempt {record.attempt}/{record.max_attempts}")
    if record.current_processing_job:
        text.append(f"  {record.current_processing_job}", style="dim")
    return text


def files_failed_first(files: Sequence[FileRecord]) -> list[FileRecord]:
    """Failed files, then pending ones, then those that succeeded; by key within each."""
    return sorted(files, key=lambda f: (_FILE_ORDER[f.status], f.key))


def _lineage(artifact: ModelArtifact) -> str:
    """Where the job's model came from, as prepare resolved it."""
    if artifact.package_arn is not None:
        return (
            f"model registry group {artifact.package_group}, version {artifact.package_version}\n"
            f"package {artifact.package_arn}"
        )
    if artifact.training_job is not None:
        return f"training job {artifact.training_job}"
    return "the spec's model.uri"


def _details(record: JobRecord) -> Table:
    job = record.job
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="dim", no_wrap=True)
    grid.add_column()
    compute = job.compute
    rows: list[tuple[str, RenderableType | None]] = [
        ("pipeline", f"{record.pipeline} (DAG {job.dag_id}, run {job.run_id})"),
        ("model", f"{record.artifact.uri}\nsha256 {record.artifact.sha256}"),
        ("lineage", _lineage(record.artifact)),
        ("input", f"{job.input.prefix} ({job.input.format})"),
        ("output", f"{job.output.prefix} ({job.output.format}, probability {job.output.probability})"),
        (
            "compute",
            f"{compute.backend}: {compute.instance_count} x {compute.instance_type}, "
            f"at most {format_duration(compute.max_runtime_seconds)} an attempt",
        ),
        ("distribution", distribution_text(record)),
        ("progress", progress_line(record, bar_width=30)),
        ("created", _time(record.created_at) + " UTC"),
        ("started", _time(record.started_at) + (" UTC" if record.started_at else "")),
        ("finished", _time(record.finished_at) + " UTC" if record.finished_at else None),
        ("heartbeat", _time(record.heartbeat_at) + " UTC" if record.status.is_active and record.heartbeat_at else None),
        ("stopped by", Text(record.stopped_by, style="yellow") if record.stopped_by else None),
        (
            "refused",
            f"{record.files_refused} input key(s), never read:\n" + "\n".join(record.refused_files)
            if record.files_refused
            else None,
        ),
        ("error", Text(record.error, style="red") if record.error else None),
    ]
    for label, value in rows:
        if value is not None:
            grid.add_row(label, value)
    return grid


def _attempts(record: JobRecord, files: Sequence[FileRecord]) -> Table:
    if not record.attempts:  # a job recorded before attempts were logged: count from its files
        table = _table(
            ("#", "processing job", "succeeded", "failed", ""), right=("#", "succeeded", "failed"), title="Attempts"
        )
        for number, name in enumerate(record.processing_jobs, start=1):
            reported = [f for f in files if f.processing_job == name]
            succeeded = sum(1 for f in reported if f.status is FileStatus.SUCCEEDED)
            current = name == record.current_processing_job and record.status.is_active
            table.add_row(
                str(number), name, str(succeeded), str(len(reported) - succeeded), "running" if current else ""
            )
        return table
    table = _table(
        ("#", "processing job", "instances", "files", "rows", "started", "ended", "outcome"),
        right=("#", "files", "rows"),
        title="Attempts (times UTC)",
    )
    for a in record.attempts:
        table.add_row(
            str(a.number),
            a.processing_job,
            f"{a.instance_count} x {a.instance_type}",
            f"{a.files_done}/{a.files}",
            f"{a.rows:,}",
            _clock(a.started_at or a.submitted_at),
            _clock(a.ended_at),
            status_text(a.status) if a.status else status_text(record.status),
        )
    return table


def _attempt_reasons(record: JobRecord) -> Table | None:
    """Why each attempt ended, under the attempts table: the reasons are long, the table wide."""
    reasons = [(a.number, a.reason) for a in record.attempts if a.reason]
    if not reasons:
        return None
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="dim", no_wrap=True)
    grid.add_column(overflow="fold")
    for number, reason in reasons:
        grid.add_row(f"attempt {number}", Text(reason, style="red"))
    return grid


def _files(files: Sequence[FileRecord], limit: int) -> Table:
    ordered = files_failed_first(files)
    shown = ordered[:limit] if limit else ordered
    title = "Files, failed first"
    if len(shown) < len(ordered):
        title += f" ({len(shown)} of {len(ordered)}: --files 0 shows all)"
    table = _table(
        ("status", "file", "rows", "seconds", "error kind", "error, or output key"),
        right=("rows", "seconds"),
        fold=("file", "error, or output key"),
        title=title,
    )
    for f in shown:
        table.add_row(
            Text(str(f.status), style=_FILE_STYLES[f.status]),
            f.key if f.parts == 1 else f"{f.key} ({f.parts} parts)",
            f"{f.rows:,}" if f.status is FileStatus.SUCCEEDED else "-",
            "-" if f.seconds is None else f"{f.seconds:.1f}",
            str(f.error_kind) if f.error_kind else "",
            Text(f.error, style="red") if f.error else (f.output_key or ""),
        )
    return table


def _units(summary: UnitsSummary) -> Group:
    """A dynamic job's units: the count by state, then what each instance did."""
    table = _table(
        ("host", "units done", "rows", "busy s", "reclaimed"),
        right=("units done", "rows", "busy s", "reclaimed"),
        title="Units by instance",
    )
    for host in summary.hosts:
        table.add_row(host.host, str(host.done), f"{host.rows:,}", f"{host.busy_seconds:.1f}", str(host.reclaimed))
    return Group(Text(summary.text), table) if summary.hosts else Group(Text(summary.text))


def job_detail(
    record: JobRecord, files: Sequence[FileRecord], file_limit: int = 100, units: Sequence[WorkUnit] = ()
) -> Group:
    """Everything ``shardflow jobs show`` prints about one job; ``units`` are a dynamic job's
    (``JobStore.list_units``)."""
    parts: list[RenderableType] = [headline(record), _details(record)]
    if record.processing_jobs:
        parts += ["", _attempts(record, files)]
        reasons = _attempt_reasons(record)
        if reasons is not None:
            parts.append(reasons)
    if record.dynamic:
        parts += ["", _units(units_summary(units))]
    if files:
        parts += ["", _files(files, file_limit)]
    return Group(*parts)


def job_json(record: JobRecord) -> dict[str, Any]:
    """The record as plain JSON values, with its progress counted as the tables count it."""
    values: dict[str, Any] = {f.name: getattr(record, f.name) for f in fields(record)}
    values.update(
        job=record.job.model_dump(mode="json"),
        model=record.artifact.model_dump(mode="json"),
        status=str(record.status),
        pipeline=record.pipeline,
        max_attempts=record.max_attempts,
        distribution=record.distribution or "sharded",  # a record from before the choice was sharded
        attempts=[{**asdict(a), "status": str(a.status) if a.status else None} for a in record.attempts],
    )
    progress = job_progress(record)
    values["progress"] = {**asdict(progress), "rows_per_second": progress.rows_per_second}
    return values


def units_json(units: Sequence[WorkUnit]) -> dict[str, Any]:
    """A dynamic job's units as ``jobs show`` counts them: by state, and per instance."""
    summary = units_summary(units)
    return {
        "total": summary.total,
        "states": summary.states,
        "reclaimed": summary.reclaimed,
        "hosts": [asdict(host) for host in summary.hosts],
    }


def file_json(record: FileRecord) -> dict[str, Any]:
    values = asdict(record)
    values.update(
        status=str(record.status),
        error_kind=str(record.error_kind) if record.error_kind else None,
        retryable=record.retryable,
    )
    return values
