"""``input.wait``: the spec's rules for waiting on late input, and what counts as arrived."""

from pathlib import Path

import pytest
import yaml
from support.fakes import InMemoryObjectStore

from shardflow.core.arrival import Arrival
from shardflow.core.s3uri import S3Uri
from shardflow.spec import SpecError, parse_spec
from shardflow.spec.jobs import job_for_run

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "dags" / "pipelines" / "demo.yaml"
PREFIX = S3Uri("shardflow-unit", "events/dt=2026-03-09/")


def spec_with_wait(wait: object) -> dict:
    data = yaml.safe_load(DEMO.read_text())
    data["input"] = {"prefix": "s3://shardflow-unit/events/dt={{ ds }}/", "format": "parquet", "wait": wait}
    return data


def test_the_demo_waits_for_its_days_success_marker():
    wait = parse_spec(yaml.safe_load(DEMO.read_text())).input.wait
    assert wait is not None and (wait.marker, wait.timeout_seconds) == ("_SUCCESS", 21600)


def test_without_a_marker_the_wait_is_for_an_input_file_for_six_hours():
    wait = parse_spec(spec_with_wait({})).input.wait
    assert wait is not None and (wait.marker, wait.timeout_seconds) == (None, 21600)
    assert parse_spec(spec_with_wait(None)).input.wait is None


@pytest.mark.parametrize(
    ("wait", "field", "words"),
    [
        ({"marker": "../_SUCCESS"}, "input.wait.marker", "'..' segment"),
        ({"marker": "/_SUCCESS"}, "input.wait.marker", "starts with '/'"),
        ({"marker": "done//_SUCCESS"}, "input.wait.marker", "empty segment"),
        ({"marker": ""}, "input.wait.marker", "names the prefix itself"),
        ({"marker": "_SUCCESS_{{ ds }}"}, "input.wait.marker", "cannot be templated"),
        ({"timeout_seconds": 0}, "input.wait.timeout_seconds", "greater than or equal to 1"),
        ({"timeout_seconds": 8 * 86400}, "input.wait.timeout_seconds", "less than or equal to 604800"),
        ({"marker": "_SUCCESS", "timeout": 60}, "input.wait.timeout", "unknown field"),
        ("_SUCCESS", "input.wait", "valid dictionary"),
    ],
)
def test_a_bad_wait_names_its_field(wait, field, words):
    with pytest.raises(SpecError) as raised:
        parse_spec(spec_with_wait(wait), "pipelines/late.yaml")
    line = next(line for line in str(raised.value).splitlines() if line.strip().startswith(f"{field}:"))
    assert words in line


def test_the_wait_stays_out_of_the_job_description():
    """The wait happens before the job exists: the job record's description does not carry it."""
    spec = parse_spec(spec_with_wait({"marker": "_SUCCESS"}))
    job = job_for_run(spec, run_id="scheduled__2026-03-09", when="2026-03-09")
    assert job.input.prefix == str(PREFIX)
    assert "wait" not in job.input.model_dump()


def test_a_marker_arrives_only_as_its_own_key():
    objects = InMemoryObjectStore()
    arrival = Arrival(PREFIX, "parquet", "_SUCCESS")
    objects.put(PREFIX.join("part-0000.parquet"), b"PAR1")
    objects.put(PREFIX.join("_SUCCESS.crc"), b"x")
    assert arrival.find(objects) is None  # data alone, or a key that only starts like it, is not the marker

    objects.put(PREFIX.join("_SUCCESS"), b"")  # an empty marker is the usual one
    found = arrival.find(objects)
    assert found is not None and found.key == "events/dt=2026-03-09/_SUCCESS"
    assert arrival.listing == S3Uri("shardflow-unit", "events/dt=2026-03-09/_SUCCESS")


def test_without_a_marker_the_first_non_empty_file_of_the_format_arrives():
    objects = InMemoryObjectStore()
    arrival = Arrival(PREFIX, "parquet")
    objects.put(PREFIX.join("_SUCCESS"), b"")
    objects.put(PREFIX.join("a-empty.parquet"), b"")
    objects.put(PREFIX.join("notes.csv"), b"a,b\n")
    objects.put(S3Uri("shardflow-unit", "events/dt=2026-03-09-other/part.parquet"), b"PAR1")
    assert arrival.find(objects) is None  # a marker, an empty file, another format, a sibling prefix

    objects.put(PREFIX.join("late/part-0001.parq"), b"PAR1")
    found = arrival.find(objects)
    assert found is not None and found.key == "events/dt=2026-03-09/late/part-0001.parq"


def test_the_timeout_message_names_the_prefix_and_what_it_waited_for():
    marker = Arrival(PREFIX, "parquet", "_SUCCESS").timeout_message(21600)
    waited = "waited 21600 s (input.wait.timeout_seconds) for the marker _SUCCESS under s3://shardflow-unit/events/dt="
    assert waited + "2026-03-09/" in marker
    assert "raise input.wait.timeout_seconds" in marker
    files = Arrival(S3Uri("b-unit", "in"), "csv.gz").timeout_message(90)
    assert "for a non-empty csv.gz file (.csv.gz) under s3://b-unit/in/" in files
