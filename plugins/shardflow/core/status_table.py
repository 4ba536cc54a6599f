"""The job-status table users read in the terminal: one row per job, newest first."""

from __future__ import annotations

from collections.abc import Sequence

from shardflow.core.record import JobRecord, JobStatus

__all__ = ["format_jobs", "format_table"]


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns under a dashed rule."""
    rows = [tuple(header), *(tuple(row) for row in rows)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _files_done(record: JobRecord) -> str:
    if record.status in (JobStatus.SUBMITTED, JobStatus.RUNNING):
        # Live: files this attempt has finished, on top of those earlier attempts finished.
        done = record.files_total - record.attempt_files + record.progress_files
        return f"{done}/{record.files_total} (running)"
    failed = f" ({record.files_failed} failed)" if record.files_failed else ""
    return f"{record.files_succeeded}/{record.files_total}{failed}"


def format_jobs(records: Sequence[JobRecord]) -> str:
    """The job-status table users read: one row per job, newest first."""
    header = ("job id", "pipeline", "status", "attempts", "files done/total", "rows", "duration")
    rows = []
    for r in records:
        seconds = r.duration_seconds()
        rows.append(
            (
                r.job_id,
                r.pipeline,
                str(r.status),
                f"{r.attempt}/{r.max_attempts}",
                _files_done(r),
                f"{r.rows:,}",
                f"{seconds:.1f} s" if seconds is not None else "-",
            )
        )
    return format_table(header, rows)
