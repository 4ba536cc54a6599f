"""How a job's distribution reads wherever a person looks: ``shardflow jobs show`` (tables and
``--json``) and the job's page in the Airflow UI, from records and units alone."""

import io
import json
import re
from dataclasses import replace

import pytest
from rich.console import Console
from support.fakes import InMemoryJobStore
from support.records import sample_job, sample_job_spec

from shardflow.airflow.ui.pages import job_page
from shardflow.cli.job_views import file_json, job_detail, job_json, units_json
from shardflow.cli.job_watch import watch_job
from shardflow.core.record import FileRecord, FileStatus, JobStatus
from shardflow.core.status_table import distribution_text, units_summary
from shardflow.core.units import AUTO_THRESHOLD, UnitState, WorkUnit

DONE = UnitState.DONE
UNITS = [
    WorkUnit(0, "a.parquet", 400, 400, state=DONE, host="algo-1", claims=1, rows=100, seconds=1.5),
    WorkUnit(1, "b.parquet", 300, 300, state=DONE, host="algo-2", claims=2, rows=70, seconds=2.25),
    WorkUnit(2, "c.parquet", 200, 200, state=DONE, host="algo-1", claims=1, rows=50, seconds=0.5),
    WorkUnit(3, "d.parquet", 100, 100, state=UnitState.LEASED, host="algo-2", claims=1),
    WorkUnit(4, "e.parquet", 50, 50),
]


def render(renderable, width: int = 200) -> str:
    console = Console(width=width, record=True, color_system=None, file=io.StringIO())
    console.print(renderable)
    return "\n".join(line.rstrip() for line in console.export_text().splitlines())


def dynamic_job(requested: str = "auto", imbalance: float = 1.42, **changes):
    record = sample_job(
        status=JobStatus.RUNNING,
        attempt=1,
        processing_jobs=["demo-000000000001-a1"],
        files_total=5,
        distribution="dynamic",
        predicted_imbalance=imbalance,
        **changes,
    )
    return replace(record, job=sample_job_spec(distribution=requested))


@pytest.mark.parametrize(
    ("requested", "chosen", "imbalance", "expected"),
    [
        (
            "auto",
            "dynamic",
            1.42,
            f"dynamic (auto chose it: sharded shares' predicted imbalance 1.42 > {AUTO_THRESHOLD:.2f})",
        ),
        (
            "auto",
            "sharded",
            1.05,
            f"sharded (auto chose it: sharded shares' predicted imbalance 1.05 <= {AUTO_THRESHOLD:.2f})",
        ),
        ("sharded", "sharded", 1.05, "sharded (predicted imbalance 1.05)"),
        ("dynamic", "dynamic", 2.5, "dynamic (predicted imbalance 2.50)"),
        ("sharded", None, None, "sharded"),  # a record from before the choice was recorded
    ],
)
def test_distribution_line_says_what_was_chosen_and_why(requested, chosen, imbalance, expected):
    record = replace(
        sample_job(distribution=chosen, predicted_imbalance=imbalance), job=sample_job_spec(distribution=requested)
    )
    assert distribution_text(record) == expected
    assert re.search(rf"^distribution +{re.escape(expected)}$", render(job_detail(record, [])), re.M)


def test_dynamic_job_show_counts_its_units_by_state_and_by_host():
    text = render(job_detail(dynamic_job(), [], units=UNITS))

    assert "5 units: 3 done, 1 leased, 1 open; 1 reclaimed (claimed more than once)" in text
    rows = {line.split()[0]: line.split()[1:] for line in text.splitlines() if line.startswith("algo-")}
    # host: units done, rows, busy seconds (the units' own), reclaimed
    assert rows == {"algo-1": ["2", "150", "2.0", "0"], "algo-2": ["1", "70", "2.2", "1"]}


def test_a_sharded_job_has_no_units_section_and_an_old_record_reads_as_sharded():
    record = sample_job(status=JobStatus.SUCCEEDED, files_total=1)  # distribution None
    text = render(job_detail(record, []))
    assert "Units by instance" not in text and "units:" not in text
    assert job_json(record)["distribution"] == "sharded"


def test_dynamic_job_json_holds_the_same_counts_as_the_table():
    record = dynamic_job()
    values = json.loads(json.dumps({"job": job_json(record), "units": units_json(UNITS)}))
    assert (values["job"]["distribution"], values["job"]["predicted_imbalance"]) == ("dynamic", 1.42)
    assert values["job"]["job"]["compute"]["distribution"] == "auto"
    assert values["units"]["states"] == {"done": 3, "leased": 1, "open": 1, "failed": 0}
    assert values["units"]["reclaimed"] == 1
    assert values["units"]["hosts"][1] == {
        "host": "algo-2",
        "done": 1,
        "rows": 70,
        "busy_seconds": 2.25,
        "reclaimed": 1,
    }


def test_a_split_file_shows_its_parts_beside_its_key_in_the_cli_and_the_page():
    split = FileRecord(
        "big/day.parquet", 9_000, FileStatus.SUCCEEDED, rows=6_000, parts=3, output_key="big/day.parquet"
    )
    whole = FileRecord("small.parquet", 10, FileStatus.SUCCEEDED, rows=5, output_key="small.parquet")
    record = dynamic_job()
    text = render(job_detail(record, [split, whole], units=UNITS))
    assert "big/day.parquet (3 parts)" in text and "small.parquet (" not in text
    assert file_json(split)["parts"] == 3
    page = job_page(record, [split, whole], None, units=UNITS)
    assert "big/day.parquet <span class='parts'>(3 parts)</span>" in page
    assert "small.parquet <span" not in page


def test_dynamic_job_page_shows_the_distribution_and_a_row_per_host():
    page = job_page(dynamic_job(), [], None, units=UNITS)
    assert (
        f"<span id='distribution'>dynamic (auto chose it: sharded shares&#x27; predicted imbalance 1.42 &gt; "
        f"{AUTO_THRESHOLD:.2f})</span>" in page
    )
    assert "<p id='units-summary'>5 units: 3 done, 1 leased, 1 open; 1 reclaimed (claimed more than once)" in page
    rows = re.findall(r"<tr data-host='([^']+)'>((?:<td>[^<]*</td>)+)</tr>", page)
    cells = {host: re.findall(r"<td>([^<]*)</td>", row) for host, row in rows}
    assert cells == {"algo-1": ["algo-1", "2", "150", "2.0", "0"], "algo-2": ["algo-2", "1", "70", "2.2", "1"]}


def test_sharded_job_page_has_no_units_table():
    page = job_page(sample_job(distribution="sharded", predicted_imbalance=1.05), [], None)
    assert "<span id='distribution'>sharded (predicted imbalance 1.05)</span>" in page
    assert "id='units'" not in page


def test_units_summary_of_no_units_is_empty_not_an_error():
    summary = units_summary([])
    assert (summary.total, summary.hosts, summary.text) == (0, (), "0 units; 0 reclaimed (claimed more than once)")


def test_watch_on_a_terminal_says_a_dynamic_job_is_dynamic():
    store = InMemoryJobStore()
    record = replace(dynamic_job(), status=JobStatus.SUCCEEDED)
    store.create_job(record, [])
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=160, color_system=None)

    assert watch_job(store, record.job_id, console, interval=0.01) == 0

    assert "distribution dynamic (auto chose it: sharded shares' predicted imbalance 1.42" in screen.getvalue()
