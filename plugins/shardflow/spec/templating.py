"""Templated S3 prefixes: which run variables a spec may use, and how they render for one date.

A template is data, not code: a tiny parser accepts ``{{ ds }}``, ``{{ ds_nodash }}``,
``{{ ts }}``, ``{{ ts_nodash }}``, ``{{ logical_date }}`` and
``{{ logical_date.strftime('<format>') }}``, and refuses anything else, in time bounded by the
template's length. Shardflow renders prefixes itself, in the prepare task and in ``shardflow run``
(through :func:`shardflow.spec.jobs.job_for_run`); Airflow never renders them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

__all__ = [
    "MAX_TEMPLATE_CHARS",
    "PREFIX_VARIABLES",
    "TemplateError",
    "prefix_context",
    "render_prefix",
    "run_date",
    "template_variables",
]

#: The run variables a prefix may use; each is in Airflow's task context too.
PREFIX_VARIABLES: dict[str, str] = {
    "ds": "the run's date, 2026-01-31",
    "ds_nodash": "the run's date, 20260131",
    "ts": "the run's timestamp, 2026-01-31T00:00:00+00:00",
    "ts_nodash": "the run's timestamp, 20260131T000000",
    "logical_date": "the run's datetime, for strftime: {{ logical_date.strftime('%Y/%m/%d') }}",
}
#: An S3 address is at most 1024 characters; a longer template is refused before it is parsed.
MAX_TEMPLATE_CHARS = 1024

_VARIABLE = re.compile(r"\s*([a-z_]+)\s*")
#: strftime's directives and the characters a key may hold around them; no quote, no brace.
_STRFTIME = re.compile(r"\s*logical_date\s*\.\s*strftime\s*\(\s*(['\"])([A-Za-z0-9%/_=.:+-]{1,64})\1\s*\)\s*")
_OTHER_TAGS = ("{%", "%}", "{#", "#}")


class TemplateError(ValueError):
    """A template that is not one of the forms a prefix may use; the message says which part."""


@dataclass(frozen=True)
class _Expression:
    variable: str
    strftime: str | None = None

    def render(self, context: dict[str, Any]) -> str:
        value = context[self.variable]
        return value.strftime(self.strftime) if self.strftime is not None else str(value)


def _expression(inner: str) -> _Expression:
    variable = _VARIABLE.fullmatch(inner)
    if variable:
        if variable[1] not in PREFIX_VARIABLES:
            raise TemplateError(
                f"unknown template variable(s) {variable[1]}: a prefix may use {', '.join(PREFIX_VARIABLES)}"
            )
        return _Expression(variable[1])
    strftime = _STRFTIME.fullmatch(inner)
    if strftime:
        return _Expression("logical_date", strftime[2])
    shown = inner.strip()
    shown = shown if len(shown) <= 40 else shown[:40] + "..."
    raise TemplateError(
        f"{{{{ {shown} }}}} is not allowed: a prefix may use {{{{ VARIABLE }}}} with one of "
        f"{', '.join(PREFIX_VARIABLES)}, or {{{{ logical_date.strftime('FORMAT') }}}}, and nothing else"
    )


def _parse(template: str) -> list[str | _Expression]:
    """The template as literal text and expressions. Each character is looked at a bounded
    number of times, whatever the template holds."""
    if len(template) > MAX_TEMPLATE_CHARS:
        raise TemplateError(f"is {len(template)} characters long; a prefix may have at most {MAX_TEMPLATE_CHARS}")
    for tag in _OTHER_TAGS:
        if tag in template:
            raise TemplateError(f"holds {tag!r}: a prefix may use only {{{{ ... }}}} expressions, never statements")
    parts: list[str | _Expression] = []
    position = 0
    while (start := template.find("{{", position)) != -1:
        end = template.find("}}", start + 2)
        if end == -1:
            raise TemplateError("has a '{{' that is never closed with '}}'")
        parts.append(template[position:start])
        parts.append(_expression(template[start + 2 : end]))
        position = end + 2
    if "}}" in template[position:]:
        raise TemplateError("has a '}}' that closes nothing")
    parts.append(template[position:])
    return [part for part in parts if part != ""]


def run_date(value: date | datetime | str) -> datetime:
    """A run's logical date as an aware UTC datetime; a bare date means its midnight."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def prefix_context(when: date | datetime | str) -> dict[str, Any]:
    """The variables of :data:`PREFIX_VARIABLES` for a run at ``when``, as Airflow computes them."""
    moment = run_date(when)
    return {
        "ds": moment.strftime("%Y-%m-%d"),
        "ds_nodash": moment.strftime("%Y%m%d"),
        "ts": moment.isoformat(),
        "ts_nodash": moment.strftime("%Y%m%dT%H%M%S"),
        "logical_date": moment,
    }


def template_variables(template: str) -> set[str]:
    """The variables a template uses. :raises TemplateError: it is not a template a prefix may be."""
    return {part.variable for part in _parse(template) if isinstance(part, _Expression)}


def render_prefix(template: str, when: date | datetime | str) -> str:
    """Render a spec's prefix for a run at ``when``. :raises TemplateError: as :func:`template_variables`."""
    context = prefix_context(when)
    return "".join(part if isinstance(part, str) else part.render(context) for part in _parse(template))
