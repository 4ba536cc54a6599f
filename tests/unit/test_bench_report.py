"""The benchmark's verdicts: the ratios it prints against the issue's targets, and the bound that
reading and writing every row puts on the ratio to the compute ceiling."""

from __future__ import annotations

from bench.measure import Run
from bench.report import Row, targets

ROWS = 1_000_000


def row(method: str, work_seconds: float, cpu_seconds: float, model: str = "xgboost", scenario: str = "files") -> Row:
    run = Run(
        wall_seconds=work_seconds + 1.0,
        work_seconds=work_seconds,
        cpu_seconds=cpu_seconds,
        rows=ROWS,
        work_cpu_seconds=cpu_seconds,
    )
    return Row(model, scenario, method, run)


def test_the_verdicts_divide_work_rates_and_name_what_is_not_met():
    lines = targets(
        [
            row("ceiling", 1.0, 2.0),
            row("I/O floor", 0.25, 0.5),
            row("processing script", 1.25, 2.5),  # 0.80x the ceiling
            row("blog pattern", 4.0, 8.0),
            row("processing script", 1.1, 2.2, scenario="big"),  # 0.91x
        ]
    )
    small, big, bound, blog = lines
    assert small.startswith("XGBoost, small files, work vs the compute ceiling: 0.80x (target >= 0.85x: NOT met)")
    assert big.startswith("XGBoost, one big file, work vs the compute ceiling: 0.91x (target >= 0.85x: met)")
    assert blog.startswith("XGBoost vs the blog pattern, on the work as the issue timed it: 3.20x (target >= 2.2x")
    assert "3.20x (target >= 2.2x: met)" in blog
    # 2.0 us/row on the model and 0.5 on the files: no method that writes every row beats 2.0 / 2.5.
    assert bound.startswith("the bound for reading and writing every row, by CPU time: 0.80x the ceiling")
    assert "the model 2.00 us/row" in bound and "the files 0.50 us/row" in bound


def test_no_bound_without_the_cpu_figures_it_is_made_of():
    floor = row("I/O floor", 0.25, 0.5)
    floor.run.work_cpu_seconds = None
    lines = targets([row("ceiling", 1.0, 2.0), floor, row("processing script", 1.25, 2.5)])
    assert not [line for line in lines if line.startswith("the bound")]


def test_the_pipeline_is_judged_against_its_own_ceiling():
    lines = targets(
        [
            row("ceiling", 1.0, 2.0),  # XGBoost's ceiling: not the Pipeline's
            row("ceiling", 2.0, 4.0, model="pipeline", scenario="mixed"),
            row("processing script", 2.5, 4.4, model="pipeline", scenario="mixed"),  # 0.80x
        ]
    )
    [pipeline] = [line for line in lines if line.startswith("Pipeline")]
    assert pipeline == (
        "Pipeline on mixed types, work vs its ceiling (model.predict(df) in memory, every core): "
        "0.80x (target >= 0.7x: met); by CPU time 0.91x"
    )
