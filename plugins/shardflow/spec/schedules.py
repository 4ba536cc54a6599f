"""Checks a spec's clock schedule, a preset or a five-field cron expression, without Airflow.

Stricter than Airflow's cron parser: what passes here, Airflow accepts too.
"""

from __future__ import annotations

import re

__all__ = ["PRESETS", "check_clock_schedule"]

#: Airflow's presets a batch pipeline can use (``@continuous`` cannot: a job takes minutes).
PRESETS = ("@once", "@hourly", "@daily", "@weekly", "@monthly", "@quarterly", "@yearly")

_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
#: (field name, lowest, highest, names for the values from ``lowest`` on)
_FIELDS: tuple[tuple[str, int, int, tuple[str, ...]], ...] = (
    ("minute", 0, 59, ()),
    ("hour", 0, 23, ()),
    ("day of month", 1, 31, ()),
    ("month", 1, 12, _MONTHS),
    ("day of week", 0, 7, _DAYS),
)
_ITEM = re.compile(r"^(?P<range>\*|[a-z0-9]+(?:-[a-z0-9]+)?)(?:/(?P<step>\d+))?$")


def _value(text: str, low: int, high: int, names: tuple[str, ...], field: str) -> int:
    if text in names:
        return low + names.index(text)
    if not text.isdigit() or not low <= int(text) <= high:
        allowed = f"{low}-{high}" + (f" or {names[0]}-{names[-1]}" if names else "")
        raise ValueError(f"{field} {text!r} is out of range: use {allowed}")
    return int(text)


def _check_field(text: str, field: str, low: int, high: int, names: tuple[str, ...]) -> None:
    for item in text.split(","):
        match = _ITEM.match(item)
        if not match:
            raise ValueError(f"{field} {item!r} is not a cron field: use *, N, N-M, */S or lists of them")
        if match["step"] is not None and int(match["step"]) < 1:
            raise ValueError(f"{field} {item!r}: a step must be 1 or more")
        if match["range"] == "*":
            continue
        first, _, last = match["range"].partition("-")
        start = _value(first, low, high, names, field)
        if last and _value(last, low, high, names, field) < start:
            raise ValueError(f"{field} {item!r}: a range must go from low to high")


def check_clock_schedule(value: str) -> str:
    """Return ``value`` if it is a preset or a five-field cron expression; else raise ``ValueError``."""
    text = value.strip().lower()
    if text.startswith("@"):
        if text not in PRESETS:
            raise ValueError(f"unknown preset {value!r}: use one of {', '.join(PRESETS)}, or a cron expression")
        return text
    parts = text.split()
    if len(parts) != 5:
        raise ValueError(
            f"{value!r} is not a cron expression: it needs five fields (minute hour day-of-month month "
            f"day-of-week, e.g. '0 3 * * *'), or use a preset ({', '.join(PRESETS)})"
        )
    for part, (field, low, high, names) in zip(parts, _FIELDS, strict=True):
        _check_field(part, field, low, high, names)
    return " ".join(parts)
