"""Prefix templates are data, not code: the documented forms render, and anything else (the
expressions that hung Jinja's sandbox included) is a spec error naming the field, in bounded time."""

import time
from pathlib import Path

import pytest
import yaml

from shardflow.errors import SpecError
from shardflow.spec import parse_spec
from shardflow.spec.templating import TemplateError, render_prefix, template_variables

DEMO = Path(__file__).resolve().parents[2] / "dags" / "pipelines" / "demo.yaml"

HOSTILE = {
    "lipsum": "{{ lipsum(10**6) }}",
    "power tower": "{{ 9**(9**9) }}",
    "huge literal": "{{ " + "9" * 900 + " }}",
    "deep nesting": "{{ " + "(" * 300 + "ds" + ")" * 300 + " }}",
    "filter": "{{ ds | replace('-', '/') }}",
    "filter chain": "{{ ds|upper|lower|reverse }}",
    "attribute": "{{ logical_date.year }}",
    "dunder": "{{ logical_date.__class__.__mro__ }}",
    "cycler": "{{ cycler(1, 2).next() }}",
    "namespace": "{{ namespace(a=1).a }}",
    "range": "{{ range(10**9) | list | length }}",
    "string multiply": "{{ 'a' * 10**9 }}",
    "strftime call chain": "{{ logical_date.strftime('%Y').upper() }}",
    "strftime of a variable": "{{ logical_date.strftime(ds) }}",
    "strftime with braces": "{{ logical_date.strftime('{{ ds }}') }}",
    "statement": "{% for i in range(10**9) %}x{% endfor %}",
    "comment": "{# ds #}",
    "unclosed": "{{ ds ",
    "stray close": "ds }}",
    "nested": "{{ {{ ds }} }}",
    "unknown variable": "{{ macros }}",
    "empty": "{{ }}",
}


def spec_with(field: str, template: str) -> dict:
    data = yaml.safe_load(DEMO.read_text())
    data[field]["prefix"] = f"s3://shardflow-demo/{field}/{template}/"
    return data


@pytest.mark.parametrize("field", ["input", "output"])
@pytest.mark.parametrize("template", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_templates_are_refused_at_parse_time_naming_the_field_in_under_a_second(field, template):
    started = time.perf_counter()
    with pytest.raises(SpecError) as refused:
        parse_spec(spec_with(field, template), "hostile.yaml")
    assert time.perf_counter() - started < 1.0
    lines = [line.strip() for line in str(refused.value).splitlines()]
    assert any(line.startswith(f"{field}.prefix: ") for line in lines), str(refused.value)


def test_hostile_a_template_longer_than_any_s3_address_is_refused_before_it_is_parsed():
    started = time.perf_counter()
    with pytest.raises(TemplateError, match="at most 1024"):
        render_prefix("s3://b-ok/" + "{{ ds }}" * 200_000, "2026-01-31")
    assert time.perf_counter() - started < 1.0


@pytest.mark.parametrize(
    ("template", "rendered"),
    [
        ("dt={{ ds }}/", "dt=2026-01-31/"),
        ("dt={{ds}}/", "dt=2026-01-31/"),
        ("{{  ds_nodash\t}}/", "20260131/"),
        ("ts={{ ts }}/", "ts=2026-01-31T00:00:00+00:00/"),
        ("{{ ts_nodash }}/", "20260131T000000/"),
        ("{{ logical_date }}/", "2026-01-31 00:00:00+00:00/"),
        ("{{ logical_date.strftime('%Y/%m/%d') }}/", "2026/01/31/"),
        ('{{logical_date . strftime ( "%Y-%m-%dT%H" ) }}/', "2026-01-31T00/"),
        ("y={{ logical_date.strftime('%Y') }}/m={{ logical_date.strftime('%m') }}/", "y=2026/m=01/"),
        ("no/template/", "no/template/"),
    ],
)
def test_the_documented_forms_render_as_airflow_renders_them(template, rendered):
    assert render_prefix("s3://b-ok/" + template, "2026-01-31") == "s3://b-ok/" + rendered


def test_the_variables_a_template_uses_are_named():
    used = template_variables("s3://b-ok/{{ ds }}/{{ logical_date.strftime('%H') }}/{{ ts_nodash }}/")
    assert used == {"ds", "logical_date", "ts_nodash"}
