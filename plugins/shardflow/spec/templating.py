"""Templated S3 prefixes: which run variables a spec may use, and how they render for one date.

Airflow renders the same templates in the prepare task; ``shardflow run`` renders them here.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from functools import cache
from typing import Any

__all__ = ["PREFIX_VARIABLES", "prefix_context", "render_prefix", "run_date", "template_variables"]

#: The run variables a prefix may use; each is in Airflow's task context too.
PREFIX_VARIABLES: dict[str, str] = {
    "ds": "the run's date, 2026-01-31",
    "ds_nodash": "the run's date, 20260131",
    "ts": "the run's timestamp, 2026-01-31T00:00:00+00:00",
    "ts_nodash": "the run's timestamp, 20260131T000000",
    "logical_date": "the run's datetime, for strftime: {{ logical_date.strftime('%Y/%m/%d') }}",
}


@cache
def _environment() -> Any:
    # Imported late: the processing image installs this package but never renders a spec.
    from jinja2 import StrictUndefined
    from jinja2.sandbox import SandboxedEnvironment

    return SandboxedEnvironment(undefined=StrictUndefined, autoescape=False)


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
    """The variables a template uses. :raises ValueError: it is not a valid Jinja template."""
    from jinja2 import TemplateSyntaxError, meta

    try:
        tree = _environment().parse(template)
    except TemplateSyntaxError as error:
        raise ValueError(f"is not a valid template: {error.message}") from None
    return set(meta.find_undeclared_variables(tree))


def render_prefix(template: str, when: date | datetime | str) -> str:
    """Render a spec's prefix for a run at ``when``, outside Airflow."""
    return str(_environment().from_string(template).render(prefix_context(when)))
