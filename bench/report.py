"""The benchmark's table and its verdict on the issue's targets, as Markdown for
``bench/RESULTS.md`` and the console."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench.measure import Run

__all__ = ["Row", "render", "targets"]

_MB = 1 << 20
_TITLES = {
    ("xgboost", "files"): "XGBoost (200 trees, depth 8), small files of uneven sizes",
    ("xgboost", "big"): "XGBoost, the same rows in one big file",
    ("logreg", "files"): "LogisticRegression, small files of uneven sizes",
    ("pipeline", "mixed"): "scikit-learn Pipeline on mixed types, small files of uneven sizes",
}


@dataclass(frozen=True)
class Row:
    """One line of a table: a method's median run on one model and scenario.

    :param scenario: ``files`` (the small files) or ``big`` (the same rows in one file).
    """

    model: str
    scenario: str
    method: str
    run: Run

    @property
    def work_rate(self) -> float:
        return self.run.rows / self.run.work_seconds

    @property
    def process_rate(self) -> float:
        return self.run.rows / self.run.wall_seconds

    @property
    def cpu_per_row(self) -> float | None:
        """Microseconds of CPU per row over the work (every core and process of the method)."""
        cpu = self.run.work_cpu_seconds
        return None if cpu is None else cpu / self.run.rows * 1e6


def _find(rows: list[Row], model: str, scenario: str, method: str) -> Row | None:
    return next((r for r in rows if (r.model, r.scenario, r.method) == (model, scenario, method)), None)


def _reference(rows: list[Row], row: Row, method: str) -> Row | None:
    # The single big file holds the same rows: its ceiling is the small files' ceiling.
    return _find(rows, row.model, row.scenario, method) or _find(rows, row.model, "files", method)


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _over(row: Row, reference: Row | None) -> str:
    """``row``'s work rate over ``reference``'s, or ``-`` when the case has no such method (the
    Pipeline case has no I/O floor or blog pattern)."""
    return f"{row.work_rate / reference.work_rate:.2f}" if reference else "-"


def _cpu_ratio(reference: Row | None, row: Row) -> str:
    """How much more CPU per row the method spends than the reference, as a throughput ratio: what
    the wall-clock ratio would be on cores nobody else uses."""
    if reference is None or reference.cpu_per_row is None or row.cpu_per_row is None:
        return "-"
    return f"{reference.cpu_per_row / row.cpu_per_row:.2f}"


def _memory_cell(run: Run) -> str:
    children = run.peaks[1:]
    if not children:
        return f"{run.peaks[0] / _MB:.0f}"
    return f"{run.peaks[0] / _MB:.0f} + {len(children)} x <= {max(children) / _MB:.0f}"


def render(rows: list[Row], memory: list[tuple[int, Run]], context: dict[str, Any]) -> str:
    sizes = context["sizes"]
    lines = [
        "# Benchmark results",
        "",
        f"- date: {context['date']}",
        f"- machine: {context['machine']}; load average {context['load']}",
        f"- data: {sizes.rows:,} rows x {len(range(40))} float32 features (+ an int64 id); "
        f"{sizes.files} Parquet files of {sizes.low:,}..{sizes.high:,} rows, or one file of all of them",
        "- mixed types (the Pipeline): the same number of rows and files, each row an id, a string with "
        "gaps (30 values), a category, a nullable integer, a float with NaN, a boolean and 8 float32 "
        "numbers, written by pandas; the Pipeline one-hot encodes the text and the category, imputes and "
        "scales the numbers, then a LogisticRegression. Its ceiling is `model.predict(df)` on the whole "
        "DataFrame in memory, split over one forked process per core",
        f"- each method in a fresh process tree, {context['workers']} workers, median of {context['repeats']}"
        + (" (quick mode: a first look, not the figures to quote)" if context["quick"] else ""),
        "",
        "`work` times what each method reports after its startup (interpreter, imports, model load, "
        "Ray/Spark start); `process` times the whole process tree from its start, startup counted. "
        "`x ceiling`, `x I/O floor` and `x blog` divide work rates. `CPU s (process)`: user + "
        "system time of the whole tree; `CPU us/row (work)`: the same over the work only, per row, and "
        "`x ceiling (CPU)` the ratio it gives: the wall-clock ratio on cores that nobody else uses (this "
        "machine is shared, and a busy neighbour slows the ceiling's two OpenMP threads more than "
        "independent processes). Peak RSS in MB: the main process + each child's own peak (shared "
        "pages count in each process); `tree` is the highest sum of RSS sampled over the tree.",
        "",
    ]
    for (model, scenario), title in _TITLES.items():
        block = [r for r in rows if (r.model, r.scenario) == (model, scenario)]
        if not block:
            continue
        lines += [
            f"## {title}",
            "",
            "| method | rows/s (work) | rows/s (process) | CPU s (process) | CPU us/row (work) | x ceiling "
            "| x ceiling (CPU) | x I/O floor | x blog | peak RSS MB | tree MB |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |",
        ]
        for row in block:
            ceiling = _reference(rows, row, "ceiling")
            floor = _reference(rows, row, "I/O floor")
            blog = _reference(rows, row, "blog pattern")
            lines.append(
                f"| {row.method} | {row.work_rate:,.0f} | {row.process_rate:,.0f} | {row.run.cpu_seconds:.1f} "
                f"| {_number(row.cpu_per_row)} "
                f"| {_over(row, ceiling)} "
                f"| {_cpu_ratio(ceiling, row)} "
                f"| {_over(row, floor)} "
                f"| {_over(row, blog)} "
                f"| {_memory_cell(row.run)} | {row.run.tree_peak / _MB:.0f} |"
            )
        lines.append("")
    if memory:
        lines += [
            "## Memory: the processing script (LogisticRegression) on one file of growing size",
            "",
            "| input file MB | rows | seconds (process) | peak RSS MB: parent + workers | tree MB |",
            "| ---: | ---: | ---: | --- | ---: |",
        ]
        for size, run in memory:
            lines.append(
                f"| {size / 1e6:,.0f} | {run.rows:,} | {run.wall_seconds:.1f} | {_memory_cell(run)} "
                f"| {run.tree_peak / _MB:.0f} |"
            )
        lines.append("")
    lines += ["## The issue's targets", "", *(f"- {line}" for line in targets(rows, memory)), ""]
    for name, error in context.get("failures", {}).items():
        lines += [f"{name} did not finish and is left out: {error}", ""]
    return "\n".join(lines)


def _verdict(value: float, goal: float) -> str:
    return f"{value:.2f}x (target >= {goal}x: {'met' if value >= goal else 'NOT met'})"


def _io_bound(ceiling: Row | None, floor: Row | None) -> str | None:
    """The best ratio to the ceiling that any method which reads and writes every row can reach
    on these cores: it spends at least the ceiling's CPU on the model and the I/O floor's on the
    files, and the ceiling spends only the first."""
    if not (ceiling and floor and ceiling.cpu_per_row and floor.cpu_per_row):
        return None
    model, files = ceiling.cpu_per_row, floor.cpu_per_row
    return (
        f"the bound for reading and writing every row, by CPU time: {model / (model + files):.2f}x the ceiling "
        f"(the model {model:.2f} us/row, as the ceiling spends it, plus the files {files:.2f} us/row, as the "
        "I/O floor spends it)"
    )


def targets(rows: list[Row], memory: list[tuple[int, Run]] | None = None) -> list[str]:
    out = []
    script = _find(rows, "xgboost", "files", "processing script")
    ceiling = _find(rows, "xgboost", "files", "ceiling")
    big = _find(rows, "xgboost", "big", "processing script")
    for label, row in (("small files", script), ("one big file", big)):
        if row and ceiling:
            out.append(
                f"XGBoost, {label}, work vs the compute ceiling: {_verdict(row.work_rate / ceiling.work_rate, 0.85)}; "
                f"by CPU time {_cpu_ratio(ceiling, row)}x"
            )
    bound = _io_bound(ceiling, _find(rows, "xgboost", "files", "I/O floor"))
    if bound:
        out.append(bound)
    cheap = _find(rows, "logreg", "files", "processing script")
    floor = _find(rows, "logreg", "files", "I/O floor")
    if cheap and floor:
        ratio = _verdict(cheap.work_rate / floor.work_rate, 0.5)
        out.append(f"LogisticRegression, work vs the I/O floor: {ratio}; by CPU time {_cpu_ratio(floor, cheap)}x")
    blog = _find(rows, "xgboost", "files", "blog pattern")
    if script and blog:
        out.append(
            f"XGBoost vs the blog pattern, on the work as the issue timed it: "
            f"{_verdict(script.work_rate / blog.work_rate, 2.2)}; counting both processes' startup "
            f"{script.process_rate / blog.process_rate:.2f}x; by CPU time {_cpu_ratio(blog, script)}x"
        )
    for peer in ("Ray Data", "Spark"):
        other = _find(rows, "xgboost", "files", peer)
        if script and other:
            out.append(
                f"XGBoost vs {peer}, counting both processes' startup: "
                f"{_verdict(script.process_rate / other.process_rate, 5.0)}; on the work "
                f"{script.work_rate / other.work_rate:.2f}x"
            )
    frame = _find(rows, "pipeline", "mixed", "processing script")
    frame_ceiling = _find(rows, "pipeline", "mixed", "ceiling")
    if frame and frame_ceiling:
        out.append(
            "Pipeline on mixed types, work vs its ceiling (model.predict(df) in memory, every core): "
            f"{_verdict(frame.work_rate / frame_ceiling.work_rate, 0.7)}; by CPU time "
            f"{_cpu_ratio(frame_ceiling, frame)}x"
        )
    if memory and len(memory) > 1:
        small, large = memory[0][1], memory[-1][1]
        growth = max(large.peaks) / max(small.peaks)
        out.append(
            f"memory as the input grows {memory[0][0] / 1e6:,.0f} -> {memory[-1][0] / 1e6:,.0f} MB: "
            f"the largest process peak goes {max(small.peaks) / _MB:.0f} -> {max(large.peaks) / _MB:.0f} MB "
            f"({growth:.2f}x; {'flat' if growth < 1.25 else 'NOT flat'})"
        )
    return out
