"""What a person reads about a job wherever they look (the terminal, the demo, the Airflow page):
files done of total, rows, rows per second, duration; and the plain table the demo prints."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from shardflow.core.record import FileRecord, FileStatus, JobRecord, parse_time
from shardflow.core.units import AUTO_THRESHOLD, UnitState, WorkUnit

__all__ = [
    "HostUnits",
    "JobProgress",
    "Throughput",
    "UnitsSummary",
    "distribution_text",
    "format_duration",
    "format_jobs",
    "format_table",
    "job_progress",
    "throughput",
    "units_summary",
]


@dataclass(frozen=True)
class JobProgress:
    """A job's progress as one number of each kind, live while an attempt runs.

    :param files_done: while an attempt runs, the files earlier attempts finished plus those this
        attempt has reported (succeeded or failed); once settled, the files that succeeded.
    :param files_failed: the files that failed when the job was last settled.
    :param running: an attempt is submitted or running, so the counts are still rising.
    :param rows: rows predicted: earlier attempts' plus, while running, this attempt's so far.
    :param duration_seconds: from the first start to the end, or to now; ``None`` before it started.
    """

    files_done: int
    files_total: int
    files_failed: int
    running: bool
    rows: int
    duration_seconds: float | None

    @property
    def fraction(self) -> float:
        """Files done over files total, 0 to 1 (1 for a job without files)."""
        return min(self.files_done / self.files_total, 1.0) if self.files_total else 1.0

    @property
    def rows_per_second(self) -> float | None:
        """The job's mean throughput so far; ``None`` before it ran for a measurable time."""
        if not self.duration_seconds or self.duration_seconds <= 0:
            return None
        return self.rows / self.duration_seconds

    @property
    def files_text(self) -> str:
        """``4/6``, ``5/6 (1 failed)``."""
        failed = f" ({self.files_failed} failed)" if self.files_failed and not self.running else ""
        return f"{self.files_done}/{self.files_total}{failed}"


def job_progress(record: JobRecord) -> JobProgress:
    """The progress of ``record``, counted as the status table and the watch display show it."""
    running = record.status.is_active
    if running:
        # Files not given to this attempt were finished by earlier ones; rows of earlier attempts
        # stay in ``rows`` until the next settle.
        done = record.files_total - record.attempt_files + record.progress_files
        rows = record.rows + record.progress_rows
    else:
        done, rows = record.files_succeeded, record.rows
    return JobProgress(
        files_done=done,
        files_total=record.files_total,
        files_failed=record.files_failed,
        running=running,
        rows=rows,
        duration_seconds=record.duration_seconds(),
    )


@dataclass(frozen=True)
class Throughput:
    """Rows per second over a job's life, in equal time buckets from its first start.

    :param start: the job's first start (its creation if no start was recorded); ``bucket_seconds``
        the width of each bucket.
    :param rates: rows per second finished in each bucket, from the file results' write times
        (a file counts when its result was written, so the resolution is the script's report
        interval).
    :param marks: ``(seconds from start, label)`` of each attempt's start.
    """

    start: datetime
    bucket_seconds: float
    rates: tuple[float, ...]
    marks: tuple[tuple[float, str], ...]

    @property
    def peak(self) -> float:
        return max(self.rates, default=0.0)


def throughput(record: JobRecord, files: Sequence[FileRecord], buckets: int = 30) -> Throughput | None:
    """The job's throughput chart data; ``None`` until a file has succeeded."""
    done = [(parse_time(f.finished_at), f.rows) for f in files if f.status is FileStatus.SUCCEEDED and f.finished_at]
    began = record.started_at or record.created_at
    if not done or not began:
        return None
    start = min(parse_time(began), *(when for when, _ in done))
    end = parse_time(record.finished_at) if record.finished_at else datetime.now(UTC)
    end = max(end, *(when for when, _ in done))
    # At least a second in all: a job that took no time still gets an axis.
    width = max((end - start).total_seconds(), 1.0) / buckets
    totals = [0] * buckets
    for when, rows in done:
        totals[min(int((when - start).total_seconds() / width), buckets - 1)] += rows
    marks = tuple(
        ((parse_time(a.started_at) - start).total_seconds(), f"attempt {a.number}")
        for a in record.attempts
        if a.started_at
    )
    return Throughput(start, width, tuple(total / width for total in totals), marks)


def format_duration(seconds: float | None) -> str:
    """``-``, ``9.5 s``, ``2 min 05 s``, ``3 h 07 min``."""
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, second = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {second:02d} s"
    hours, minute = divmod(minutes, 60)
    return f"{hours} h {minute:02d} min"


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns under a dashed rule."""
    rows = [tuple(header), *(tuple(row) for row in rows)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_jobs(records: Sequence[JobRecord]) -> str:
    """The plain job-status table the demo prints: one row per job, in the order given."""
    header = ("job id", "pipeline", "status", "attempts", "files done/total", "rows", "duration")
    rows = []
    for r in records:
        progress = job_progress(r)
        rows.append(
            (
                r.job_id,
                r.pipeline,
                str(r.status),
                f"{r.attempt}/{r.max_attempts}",
                progress.files_text + (" (running)" if progress.running else ""),
                f"{progress.rows:,}",
                format_duration(progress.duration_seconds),
            )
        )
    return format_table(header, rows)


def distribution_text(record: JobRecord) -> str:
    """How the job's inputs reach its instances, and why: ``dynamic (auto chose it: sharded
    shares' predicted imbalance 1.42 > 1.16)``, ``sharded (predicted imbalance 1.05)``. A record
    written before distribution was chosen (``None``) is sharded."""
    chosen = record.distribution or "sharded"
    imbalance = record.predicted_imbalance
    if imbalance is None:
        return chosen
    if record.job.compute.distribution == "auto":
        sign = ">" if chosen == "dynamic" else "<="
        why = f"sharded shares' predicted imbalance {imbalance:.2f} {sign} {AUTO_THRESHOLD:.2f}"
        return f"{chosen} (auto chose it: {why})"
    return f"{chosen} (predicted imbalance {imbalance:.2f})"


@dataclass(frozen=True)
class HostUnits:
    """What one instance did of a dynamic job's units (those it holds now, as last claimer).

    :param done: units it finished; ``rows`` and ``busy_seconds`` (the units' own seconds) are theirs.
    :param reclaimed: units it holds that were claimed more than once (taken over after a lease
        ran out, or from an earlier attempt).
    """

    host: str
    done: int
    rows: int
    busy_seconds: float
    reclaimed: int


@dataclass(frozen=True)
class UnitsSummary:
    """A dynamic job's units: how many in each state, and per instance what it did."""

    total: int
    states: dict[str, int]
    reclaimed: int
    hosts: tuple[HostUnits, ...]

    @property
    def text(self) -> str:
        """``12 units: 10 done, 1 leased, 1 open; 2 reclaimed (claimed more than once)``."""
        states = ", ".join(f"{count} {state}" for state, count in self.states.items() if count)
        reclaimed = f"{self.reclaimed} reclaimed (claimed more than once)"
        return f"{self.total} units" + (f": {states}" if states else "") + f"; {reclaimed}"


def units_summary(units: Iterable[WorkUnit]) -> UnitsSummary:
    """Count ``units`` (from ``JobStore.list_units``) by state, and by the host that holds each."""
    units = list(units)
    states = {str(state): sum(1 for u in units if u.state is state) for state in UnitState}
    by_host: dict[str, list[WorkUnit]] = {}
    for unit in units:
        if unit.host:
            by_host.setdefault(unit.host, []).append(unit)
    hosts = tuple(
        HostUnits(
            host=host,
            done=sum(1 for u in held if u.state is UnitState.DONE),
            rows=sum(u.rows for u in held if u.state is UnitState.DONE),
            busy_seconds=sum(u.seconds or 0.0 for u in held),
            reclaimed=sum(1 for u in held if u.claims > 1),
        )
        for host, held in sorted(by_host.items())
    )
    # Done first: the order a person reads a job's units in.
    order = [UnitState.DONE, UnitState.LEASED, UnitState.OPEN, UnitState.FAILED]
    return UnitsSummary(
        total=len(units),
        states={str(state): states[str(state)] for state in order},
        reclaimed=sum(1 for u in units if u.claims > 1),
        hosts=hosts,
    )
