"""The HTML of the Shardflow pages inside the Airflow UI: the jobs table and one job's page.

Rendered on the server from job records, every value escaped; the little script they carry only
reloads a page while a job runs. Nothing is fetched from another site.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from urllib.parse import urlencode

from shardflow.airflow.ui.chart import throughput_chart
from shardflow.core.record import AttemptRecord, FileRecord, FileStatus, JobRecord, JobStatus
from shardflow.core.status_table import distribution_text, job_progress, throughput, units_summary
from shardflow.core.units import WorkUnit

__all__ = ["job_page", "jobs_page"]

_COLOURS = {
    JobStatus.PENDING: "#6b7280",
    JobStatus.SUBMITTED: "#2563eb",
    JobStatus.RUNNING: "#0891b2",
    JobStatus.SUCCEEDED: "#15803d",
    JobStatus.FAILED: "#b91c1c",
    JobStatus.CANCELLED: "#a16207",
}
_STYLE = """
body { font-family: system-ui, sans-serif; margin: 16px; color: #1f2937; }
table { border-collapse: collapse; width: 100%; font-size: 14px; }
th, td { text-align: left; padding: 6px 8px; border-bottom: 1px solid #e5e7eb; vertical-align: top; }
.status { color: #fff; border-radius: 4px; padding: 2px 6px; font-size: 12px; font-weight: 600; }
.bar { background: #e5e7eb; width: 120px; height: 10px; border-radius: 5px; display: inline-block; }
.bar > span { background: #0891b2; height: 10px; border-radius: 5px; display: block; }
.error { color: #b91c1c; white-space: pre-wrap; }
form.filters { margin-bottom: 12px; display: flex; gap: 8px; align-items: end; flex-wrap: wrap; }
dl { display: grid; grid-template-columns: max-content auto; gap: 4px 16px; }
dt { font-weight: 600; }
table#units { width: auto; min-width: 40%; }
"""


def _status(status: JobStatus) -> str:
    return f'<span class="status" data-status="{status}" style="background:{_COLOURS[status]}">{status}</span>'


def _bar(done: int, total: int) -> str:
    width = 0 if not total else round(100 * done / total)
    return (
        f'<span class="bar" role="progressbar" aria-valuenow="{done}" aria-valuemax="{total}">'
        f'<span style="width:{width}%"></span></span> {done}/{total}'
    )


def _when(value: str | None) -> str:
    """``2026-01-01T00:00:05.120000Z`` -> ``2026-01-01 00:00:05 UTC``."""
    return escape(value[:19].replace("T", " ") + " UTC") if value else "-"


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f} s"


def _page(title: str, body: str, refresh: bool) -> str:
    # While a job runs, the page reloads itself; once it has ended, it stays still.
    script = "<script>setTimeout(() => window.location.reload(), 5000);</script>" if refresh else ""
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(title)}</title>"
        f"<style>{_STYLE}</style></head><body>{body}{script}</body></html>"
    )


def jobs_page(
    jobs: Sequence[JobRecord], filters: dict[str, str], next_cursor: str | None, links: dict[str, str]
) -> str:
    """The jobs table, newest first, with its filters and a link to the next page.

    :param links: ``job`` (a format string with ``{job_id}``) and ``run`` (with ``{dag_id}``,
        ``{run_id}``), where a row's links point.
    """
    rows = []
    for job in jobs:
        progress = job_progress(job)
        rate = "-" if progress.rows_per_second is None else f"{progress.rows_per_second:,.0f}"
        compute = job.job.compute
        run = links["run"].format(dag_id=job.job.dag_id, run_id=job.job.run_id)
        rows.append(
            f"<tr data-job='{escape(job.job_id)}'><td><a href='{escape(links['job'].format(job_id=job.job_id))}'>"
            f"{escape(job.job_id)}</a></td><td>{escape(job.pipeline)}</td><td>{_status(job.status)}</td>"
            f"<td>{job.attempt}/{job.max_attempts}</td><td>{_bar(progress.files_done, job.files_total)}</td>"
            f"<td>{progress.rows:,}</td><td>{rate}</td><td>{_seconds(progress.duration_seconds)}</td>"
            f"<td>{escape(compute.instance_type)} x {compute.instance_count}</td>"
            f"<td><a href='{escape(run)}' target='_top'>{escape(job.job.run_id)}</a></td></tr>"
        )
    options = "".join(
        f"<option {'selected' if filters.get('status') == s else ''}>{s}</option>" for s in ["", *JobStatus]
    )
    form = (
        "<form class='filters' method='get'>"
        f"<label>Pipeline<br><input name='pipeline' value='{escape(filters.get('pipeline', ''))}'></label>"
        f"<label>Status<br><select name='status'>{options}</select></label>"
        f"<label>Since<br><input type='date' name='since' value='{escape(filters.get('since', ''))}'></label>"
        f"<label>Until<br><input type='date' name='until' value='{escape(filters.get('until', ''))}'></label>"
        "<button type='submit'>Filter</button></form>"
    )
    more = ""
    if next_cursor:
        more = f"<p><a id='next' href='?{escape(urlencode({**filters, 'cursor': next_cursor}))}'>Older jobs</a></p>"
    header = (
        "<tr><th>Job</th><th>Pipeline</th><th>Status</th><th>Attempt</th><th>Files</th><th>Rows</th>"
        "<th>Rows/s</th><th>Duration</th><th>Instances</th><th>DAG run</th></tr>"
    )
    empty = "" if rows else "<p>No jobs match.</p>"
    body = f"<h2>Shardflow jobs</h2>{form}<table><thead>{header}</thead><tbody>{''.join(rows)}</tbody></table>"
    return _page("Shardflow jobs", body + empty + more, refresh=any(j.status.is_active for j in jobs))


def _parts(file: FileRecord) -> str:
    """`` (3 parts)`` beside a file a dynamic job split at its row groups."""
    return f" <span class='parts'>({file.parts} parts)</span>" if file.parts > 1 else ""


def _units_table(units: Sequence[WorkUnit]) -> str:
    """A dynamic job's units: the count by state, then per instance what it did."""
    summary = units_summary(units)
    rows = "".join(
        f"<tr data-host='{escape(h.host)}'><td>{escape(h.host)}</td><td>{h.done}</td><td>{h.rows:,}</td>"
        f"<td>{h.busy_seconds:,.1f}</td><td>{h.reclaimed}</td></tr>"
        for h in summary.hosts
    )
    header = "<tr><th>Host</th><th>Units done</th><th>Rows</th><th>Busy s</th><th>Reclaimed</th></tr>"
    return (
        f"<p id='units-summary'>{escape(summary.text)}</p>"
        f"<table id='units'><thead>{header}</thead><tbody>{rows}</tbody></table>"
    )


def _files_table(files: Sequence[FileRecord]) -> str:
    # The failed files first: they are what a user came to see.
    order = {FileStatus.FAILED: 0, FileStatus.PENDING: 1, FileStatus.SUCCEEDED: 2}
    rows = [
        f"<tr data-file='{escape(f.key)}'><td>{escape(f.key)}{_parts(f)}</td><td>{f.status}</td><td>{f.rows:,}</td>"
        f"<td>{_seconds(f.seconds)}</td><td>{escape(f.output_key or '-')}</td>"
        f"<td class='error'>{escape(f.error or '')}</td></tr>"
        for f in sorted(files, key=lambda f: (order[f.status], f.key))
    ]
    header = "<tr><th>File</th><th>Status</th><th>Rows</th><th>Seconds</th><th>Output</th><th>Error</th></tr>"
    return f"<table id='files'><thead>{header}</thead><tbody>{''.join(rows)}</tbody></table>"


def _attempts_table(job: JobRecord) -> str:
    def row(a: AttemptRecord) -> str:
        outcome = _status(a.status) if a.status else _status(job.status)
        return (
            f"<tr data-attempt='{a.number}'><td>{a.number}</td><td>{escape(a.processing_job)}</td>"
            f"<td>{escape(a.backend)}</td><td>{escape(a.instance_type)} x {a.instance_count}</td>"
            f"<td>{a.files_done}/{a.files}</td><td>{a.rows:,}</td><td>{_when(a.submitted_at)}</td>"
            f"<td>{_when(a.started_at)}</td><td>{_when(a.ended_at)}</td><td>{outcome}</td>"
            f"<td class='error'>{escape(a.reason or '')}</td></tr>"
        )

    if not job.attempts:
        # A job recorded before attempts were logged still names its processing jobs.
        names = "".join(f"<li>{escape(name)}</li>" for name in job.processing_jobs) or "<li>none yet</li>"
        return f"<ol id='attempts'>{names}</ol>"
    header = (
        "<tr><th>#</th><th>Processing job</th><th>Backend</th><th>Instances</th><th>Files</th><th>Rows</th>"
        "<th>Submitted</th><th>Started</th><th>Ended</th><th>Outcome</th><th>Reason</th></tr>"
    )
    rows = "".join(row(a) for a in reversed(job.attempts))  # the latest first
    return f"<table id='attempts'><thead>{header}</thead><tbody>{rows}</tbody></table>"


def job_page(
    job: JobRecord,
    files: Sequence[FileRecord],
    stop_url: str | None,
    message: str = "",
    units: Sequence[WorkUnit] = (),
) -> str:
    """One job: what it runs, its attempts, its units by instance (a dynamic job's), its
    throughput, its files (failed first), and the "Stop job" button while it can be stopped
    (``stop_url``)."""
    spec = job.job
    progress = job_progress(job)
    details = {
        "Status": _status(job.status),
        "Pipeline": escape(job.pipeline),
        "DAG run": escape(f"{spec.dag_id} / {spec.run_id}"),
        "Files": _bar(progress.files_done, job.files_total),
        "Rows": f"{progress.rows:,}",
        "Rows/s": "-" if progress.rows_per_second is None else f"{progress.rows_per_second:,.0f}",
        "Attempt": f"{job.attempt}/{job.max_attempts} on {escape(spec.compute.backend)}: "
        f"{escape(spec.compute.instance_type)} x {spec.compute.instance_count}",
        "Distribution": f"<span id='distribution'>{escape(distribution_text(job))}</span>",
        "Model": f"{escape(job.artifact.uri)}<br><code>{escape(job.artifact.sha256)}</code>"
        f"<br>from {escape(job.artifact.source)}",
        "Input": f"{escape(spec.input.prefix)} ({escape(spec.input.format)})",
        "Output": f"{escape(spec.output.prefix)} ({escape(spec.output.format)})",
        "Started": _when(job.started_at),
        "Finished": _when(job.finished_at),
        "Duration": _seconds(progress.duration_seconds),
    }
    if job.stopped_by:
        details["Stopped by"] = escape(job.stopped_by)
    listing = "".join(f"<dt>{name}</dt><dd>{value}</dd>" for name, value in details.items())
    error = f"<h3>What went wrong</h3><p class='error'>{escape(job.error)}</p>" if job.error else ""
    stop = (
        f"<form method='post' action='{escape(stop_url)}'><button id='stop' type='submit'>Stop job</button></form>"
        if stop_url
        else ""
    )
    notice = f"<p id='message' class='error'>{escape(message)}</p>" if message else ""
    body = (
        f"<h2>Job {escape(job.job_id)}</h2>{notice}{stop}<dl>{listing}</dl>{error}"
        f"<h3>Attempts</h3>{_attempts_table(job)}"
        + (f"<h3>Units by instance</h3>{_units_table(units)}" if job.dynamic else "")
        + f"<h3>Throughput</h3>{throughput_chart(throughput(job, files))}"
        f"<h3>Files</h3>{_files_table(files)}"
    )
    return _page(f"Shardflow job {job.job_id}", body, refresh=job.status.is_active)
