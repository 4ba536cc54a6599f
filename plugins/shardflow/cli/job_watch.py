"""``shardflow jobs watch``: one job's progress, redrawn in place until the job ends, then one
line saying how it ended. The exit code says it too: 0 only when the job succeeded."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.text import Text

from shardflow.cli.job_views import headline, job_json, progress_line, status_text
from shardflow.core.lifecycle import retry_at
from shardflow.core.ports import JobStorePort
from shardflow.core.record import JobRecord, JobStatus
from shardflow.core.status_table import distribution_text, format_duration, job_progress

__all__ = ["RESUBMIT_GRACE", "next_attempt_due", "watch_job"]

#: A failed attempt with attempts left is resubmitted by the wait task at its first poll after the
#: backoff (it polls every 10 s); a job still not resubmitted this long after is left as it is.
RESUBMIT_GRACE = timedelta(minutes=2)


def next_attempt_due(record: JobRecord, store: JobStorePort) -> datetime | None:
    """When a FAILED job's next attempt is due, if one will come: attempts are left and a file
    may pass on another try. ``None`` for a job that has ended for good (or is not FAILED)."""
    if record.status is not JobStatus.FAILED or record.attempt >= record.max_attempts:
        return None
    if not any(f.retryable for f in store.list_files(record.job_id)):
        return None
    return retry_at(record)


class _Watcher:
    """Reads the job, and says when its next attempt is due and whether it has ended."""

    def __init__(self, store: JobStorePort, job_id: str, now: Callable[[], datetime]) -> None:
        self.store, self.job_id, self.now = store, job_id, now
        self._due: tuple[int, datetime | None] | None = None  # (version, due) of the last FAILED read

    def read(self) -> tuple[JobRecord, datetime | None, bool]:
        """The job, when its next attempt is due (if one is), and whether it has ended."""
        record = self.store.get_job(self.job_id)
        if record.status in (JobStatus.SUCCEEDED, JobStatus.CANCELLED):
            return record, None, True
        if record.status is not JobStatus.FAILED:
            return record, None, False
        # A failed job's files do not change until it is resubmitted: list them once per version.
        if self._due is None or self._due[0] != record.version:
            self._due = (record.version, next_attempt_due(record, self.store))
        due = self._due[1]
        return record, due, due is None or self.now() > due + RESUBMIT_GRACE


def _view(record: JobRecord, due: datetime | None) -> RenderableType:
    parts: list[RenderableType] = [headline(record), progress_line(record)]
    if record.dynamic:
        parts.append(Text(f"distribution {distribution_text(record)}", style="dim"))
    if due is not None:
        parts.append(Text(f"attempt {record.attempt + 1} is due at {due:%H:%M:%S} UTC", style="dim"))
    return Group(*parts)


def _counts(record: JobRecord) -> str:
    """``4/6 files, 44,533 rows, 7,421 rows/s, 6.0 s``."""
    progress = job_progress(record)
    rate = progress.rows_per_second
    return (
        f"{progress.files_text} files, {progress.rows:,} rows"
        + ("" if rate is None else f", {rate:,.0f} rows/s")
        + f", {format_duration(progress.duration_seconds)}"
    )


def _change(record: JobRecord) -> tuple[object, ...]:
    """What must differ for a piped watch to print another line (time passing is not enough)."""
    return (record.version, record.status, record.attempt, record.progress_files, record.progress_rows)


def _ending(record: JobRecord, due: datetime | None) -> Text:
    text = Text.assemble((record.job_id, "bold"), "  ", status_text(record.status), f"  {_counts(record)}")
    if record.status is JobStatus.SUCCEEDED:
        return text
    if due is not None:
        text.append(f"\nattempt {record.attempt + 1} was due at {due:%H:%M:%S} UTC and has not started")
    if record.stopped_by:
        text.append(f"\nstopped by {record.stopped_by}")
    if record.error:
        text.append(f"\n{record.error.splitlines()[0]}", style="red")
    text.append(f"\nshardflow jobs show {record.job_id}: every file and its error", style="dim")
    return text


def _follow_lines(watcher: _Watcher, interval: float, as_json: bool) -> tuple[JobRecord, datetime | None]:
    """Piped: a line (or a JSON object) each time the job moves, for logs and scripts."""
    last: tuple[object, ...] | None = None
    while True:
        record, due, ended = watcher.read()
        if _change(record) != last:
            last = _change(record)
            print(json.dumps(job_json(record)) if as_json else f"{record.job_id} {record.status}: {_counts(record)}")
            sys.stdout.flush()
        if ended:
            return record, due
        time.sleep(interval)


def _follow_live(watcher: _Watcher, interval: float, console: Console) -> tuple[JobRecord, datetime | None]:
    """On a terminal: the headline and the bar, redrawn in place. Each redraw counts the duration
    and the rate again, so the clock runs between two reads of the job."""
    seen = watcher.read()
    with Live(console=console, refresh_per_second=4, get_renderable=lambda: _view(seen[0], seen[1])):
        while not seen[2]:
            time.sleep(interval)
            seen = watcher.read()
    return seen[0], seen[1]


def watch_job(
    store: JobStorePort,
    job_id: str,
    console: Console,
    interval: float = 2.0,
    as_json: bool = False,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> int:
    """Follow ``job_id`` until it ends: redrawn in place on a terminal, one line per change when
    piped, one JSON object per change with ``as_json``. 0 when it SUCCEEDED, 1 otherwise."""
    watcher = _Watcher(store, job_id, now)
    if as_json or not console.is_terminal:
        record, due = _follow_lines(watcher, interval, as_json)
    else:
        record, due = _follow_live(watcher, interval, console)
    if not as_json:
        console.print(_ending(record, due))
    return 0 if record.status is JobStatus.SUCCEEDED else 1
