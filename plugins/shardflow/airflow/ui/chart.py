"""The job page's throughput chart: rows per second over the job's life as an inline SVG, drawn
on the server (no script, no library, nothing fetched)."""

from __future__ import annotations

from datetime import timedelta
from html import escape

from shardflow.core.status_table import Throughput

__all__ = ["throughput_chart"]

_WIDTH, _HEIGHT = 720, 180
_LEFT, _BOTTOM, _TOP = 64, 24, 20


def _clock(throughput: Throughput, seconds: float) -> str:
    return (throughput.start + timedelta(seconds=seconds)).strftime("%H:%M:%S")


def throughput_chart(throughput: Throughput | None) -> str:
    """The chart's HTML: one bar per time bucket, a dashed line where each attempt started."""
    if throughput is None or throughput.peak <= 0:
        return "<p id='throughput'>No file has finished yet.</p>"
    plot_width = _WIDTH - _LEFT - 8
    plot_height = _HEIGHT - _BOTTOM - _TOP
    step = plot_width / len(throughput.rates)
    span = throughput.bucket_seconds * len(throughput.rates)
    parts = []
    for i, rate in enumerate(throughput.rates):
        height = plot_height * rate / throughput.peak
        begin = i * throughput.bucket_seconds
        until = _clock(throughput, begin + throughput.bucket_seconds)
        label = f"{_clock(throughput, begin)}-{until} UTC: {rate:,.0f} rows/s"
        x, y = _LEFT + i * step + 1, _TOP + plot_height - height
        parts.append(
            f"<rect x='{x:.1f}' y='{y:.1f}' width='{max(step - 2, 1):.1f}' height='{height:.1f}' fill='#0891b2' "
            f"data-rate='{rate:.3f}'><title>{escape(label)}</title></rect>"
        )
    for offset, name in throughput.marks:
        x = _LEFT + plot_width * min(offset / span, 1.0)
        parts.append(
            f"<line x1='{x:.1f}' x2='{x:.1f}' y1='{_TOP - 16}' y2='{_TOP + plot_height}' stroke='#6b7280' "
            f"stroke-dasharray='4 3'/><text x='{x + 3:.1f}' y='{_TOP - 6}' font-size='11' fill='#6b7280'>"
            f"{escape(name)}</text>"
        )
    axis_y = _TOP + plot_height
    parts += [
        f"<line x1='{_LEFT}' x2='{_LEFT + plot_width}' y1='{axis_y}' y2='{axis_y}' stroke='#9ca3af'/>",
        f"<text x='{_LEFT - 6}' y='{_TOP + 10}' font-size='11' text-anchor='end'>{throughput.peak:,.0f}</text>",
        f"<text x='{_LEFT - 6}' y='{axis_y}' font-size='11' text-anchor='end'>0</text>",
        f"<text x='{_LEFT - 6}' y='{_TOP + plot_height / 2:.0f}' font-size='11' text-anchor='end'>rows/s</text>",
        f"<text x='{_LEFT}' y='{_HEIGHT - 6}' font-size='11'>{_clock(throughput, 0)} UTC</text>",
        f"<text x='{_LEFT + plot_width}' y='{_HEIGHT - 6}' font-size='11' text-anchor='end'>"
        f"{_clock(throughput, span)} UTC</text>",
    ]
    return (
        f"<svg id='throughput' role='img' aria-label='rows per second over the job' width='{_WIDTH}' "
        f"height='{_HEIGHT}' viewBox='0 0 {_WIDTH} {_HEIGHT}'>{''.join(parts)}</svg>"
    )
