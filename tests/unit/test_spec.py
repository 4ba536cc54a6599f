"""Pipeline specs: typed settings, and every mistake named by file and field before Airflow runs."""

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from shardflow.spec import (
    AssetSchedule,
    SpecError,
    check_specs,
    load_spec,
    load_specs,
    parse_spec,
    pipeline_json_schema,
)
from shardflow.spec.schedules import check_clock_schedule
from shardflow.spec.templating import render_prefix

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "dags" / "pipelines" / "demo.yaml"


def demo_data() -> dict:
    return yaml.safe_load(DEMO.read_text())


def test_demo_spec_parses_into_typed_settings():
    spec = load_spec(DEMO)
    assert spec.dag_id == "shardflow_demo"
    assert spec.compute.instance_count == 2
    assert spec.input.prefix.endswith("dt={{ ds }}/")
    assert len(spec.model.sha256) == 64


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        (lambda d: d["compute"].update(instance_count=0), "compute.instance_count", "greater than or equal to 1"),
        (lambda d: d["model"].update(sha256="abc"), "model.sha256", "64 hexadecimal"),
        (lambda d: d["input"].update(prefix="/data/in/"), "input.prefix", "s3://"),
        (lambda d: d["input"].update(prefix="s3://Bad_Bucket/in/"), "input.prefix", "not a valid S3 bucket"),
        (lambda d: d["output"].update(prefix="s3://b-ok/out"), "output.prefix", "must end with '/'"),
        (lambda d: d["input"].update(format="xlsx"), "input.format", "parquet"),
        (lambda d: d["compute"].update(instance_type="m5.xlarge"), "compute.instance_type", "pattern"),
        (lambda d: d.update(shedule="@daily"), "shedule", "unknown field"),
        (lambda d: d.pop("model"), "model", "required field is missing"),
    ],
)
def test_a_bad_spec_names_the_file_and_the_field(change, field, words):
    data = demo_data()
    change(data)
    with pytest.raises(SpecError) as raised:
        parse_spec(data, "pipelines/demo.yaml")
    message = str(raised.value)
    assert message.startswith("pipelines/demo.yaml: invalid pipeline spec")
    line = next(line for line in message.splitlines() if line.strip().startswith(f"{field}:"))
    assert words in line


def test_the_name_must_match_the_file(tmp_path):
    path = tmp_path / "other.yaml"
    path.write_text(DEMO.read_text())
    with pytest.raises(SpecError, match="must match the file name 'other'"):
        load_spec(path)


def test_broken_yaml_is_reported_with_its_file(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: [unclosed\n")
    with pytest.raises(SpecError, match=r"broken.yaml: not valid YAML"):
        load_spec(path)


def test_one_bad_spec_does_not_hide_the_good_ones(tmp_path):
    (tmp_path / "demo.yaml").write_text(DEMO.read_text())
    (tmp_path / "bad.yaml").write_text("name: bad\n")
    results = load_specs(tmp_path)
    assert not isinstance(results[tmp_path / "demo.yaml"], SpecError)
    assert isinstance(results[tmp_path / "bad.yaml"], SpecError)


def test_the_committed_json_schema_is_the_generated_one():
    committed = json.loads((REPO / "dags" / "pipelines" / "pipeline.schema.json").read_text())
    assert committed == pipeline_json_schema(), (
        "dags/pipelines/pipeline.schema.json is stale: run "
        "`shardflow pipelines schema --output dags/pipelines/pipeline.schema.json`"
    )


def test_the_json_schema_refuses_what_the_spec_refuses():
    """Editors validate with the committed schema: it must agree with pydantic on the basics."""
    validator = jsonschema.Draft202012Validator(pipeline_json_schema())
    assert not list(validator.iter_errors(json.loads(json.dumps(demo_data(), default=str))))
    for change in (
        lambda d: d.update(shedule="@daily"),
        lambda d: d["compute"].update(instance_count=0),
        lambda d: d.update(schedule={"asset": "s3://b-ok/in/", "oops": 1}),
        lambda d: d["input"].update(format="xlsx"),
    ):
        data = demo_data()
        change(data)
        assert list(validator.iter_errors(json.loads(json.dumps(data, default=str))))


@pytest.mark.parametrize(
    ("schedule", "expected"),
    [
        ("@daily", "@daily"),
        ("0 3 * * *", "0 3 * * *"),
        ("15 2 1-7 jan,jul mon-fri", "15 2 1-7 jan,jul mon-fri"),
        ({"pipeline": "upstream"}, AssetSchedule(pipeline="upstream")),
        ({"asset": "s3://landing-zone/events/"}, AssetSchedule(asset="s3://landing-zone/events/")),
        (None, None),
    ],
)
def test_a_schedule_is_a_preset_a_cron_an_asset_or_nothing(schedule, expected):
    data = demo_data()
    data["schedule"] = schedule
    if isinstance(schedule, dict):  # several runs a day: the output needs the run's time
        data["output"]["prefix"] = "s3://shardflow-demo/predictions/demo/ts={{ ts_nodash }}/"
    assert parse_spec(data).schedule == expected


@pytest.mark.parametrize(
    ("schedule", "words"),
    [
        ("@continuous", "unknown preset '@continuous'"),
        ("0 3 * *", "needs five fields"),
        ("61 3 * * *", "minute '61' is out of range"),
        ("0 3 * 13 *", "month '13' is out of range"),
        ("0 5-3 * * *", "range must go from low to high"),
        ({"asset": "s3://b-ok/in/", "pipeline": "other"}, "exactly one of `asset`"),
        ({"pipeline": "demo"}, "cannot wait for its own predictions"),
        ({"asset": "airflow://x"}, "Asset URI"),
    ],
)
def test_a_bad_schedule_says_what_is_wrong(schedule, words):
    data = demo_data()
    data["schedule"] = schedule
    with pytest.raises(SpecError) as raised:
        parse_spec(data, "demo.yaml")
    line = next(line for line in str(raised.value).splitlines() if line.strip().startswith("schedule"))
    assert words in line


def test_what_the_cron_check_accepts_airflow_accepts():
    """The check is stricter than croniter, never looser: Airflow must take all it lets through."""
    croniter = pytest.importorskip("croniter").croniter
    for expression in ("0 3 * * *", "*/15 * * * *", "0 0 1 */3 *", "5 4 * * sun", "0 22 * * 1-5", "0 0,12 1 1 *"):
        assert croniter.is_valid(check_clock_schedule(expression)), expression
    for expression in ("61 * * * *", "* * * * * *", "0 0 32 * *", "0 0 * * 8", "a b c d e"):
        with pytest.raises(ValueError):
            check_clock_schedule(expression)


@pytest.mark.parametrize(
    ("prefix", "words"),
    [
        ("s3://b-ok/out/{{ foo }}/", "unknown template variable(s) foo"),
        ("s3://b-ok/out/{{ ds }/", "not a valid template"),
        ("s3://{{ ds }}/out/", "bucket cannot be templated"),
        ("s3://b-ok/out/dt={{ ds }}", "must end with '/'"),
        ("s3://b-ok/predictions/", "the same for every run"),
    ],
)
def test_templated_prefixes_are_checked_before_airflow_renders_them(prefix, words):
    data = demo_data()
    data["output"]["prefix"] = prefix
    with pytest.raises(SpecError) as raised:
        parse_spec(data, "demo.yaml")
    line = next(line for line in str(raised.value).splitlines() if line.strip().startswith("output"))
    assert words in line


def test_a_pipeline_that_runs_several_times_a_day_needs_the_runs_time_in_its_output():
    data = demo_data()
    data["schedule"] = "0 */6 * * *"
    with pytest.raises(SpecError, match="names one folder a day"):
        parse_spec(data)
    data["output"]["prefix"] = "s3://shardflow-demo/predictions/demo/{{ logical_date.strftime('%Y/%m/%d/%H') }}/"
    assert parse_spec(data).schedule == "0 */6 * * *"


def test_prefixes_render_for_a_date_as_airflow_renders_them():
    template = "s3://b-ok/x/dt={{ ds }}/{{ ds_nodash }}/{{ ts_nodash }}/{{ logical_date.strftime('%Y/%m') }}/"
    assert render_prefix(template, "2026-03-09") == "s3://b-ok/x/dt=2026-03-09/20260309/20260309T000000/2026/03/"


def test_folder_checks_name_missing_upstreams_and_quota_breaches(tmp_path):
    (tmp_path / "demo.yaml").write_text(DEMO.read_text())
    downstream = demo_data() | {"name": "downstream", "schedule": {"pipeline": "nowhere"}}
    downstream["output"] = {"prefix": "s3://shardflow-demo/scores/{{ ts_nodash }}/"}
    (tmp_path / "downstream.yaml").write_text(yaml.safe_dump(downstream))
    results = check_specs(tmp_path, quotas={"ml.m5.xlarge": 1})
    assert "schedule.pipeline: no valid pipeline 'nowhere'" in str(results[tmp_path / "downstream.yaml"])
    assert "compute.instance_count: 2 instances of ml.m5.xlarge exceed its quota of 1" in str(
        results[tmp_path / "demo.yaml"]
    )
