"""The SVG charts of the HTML report, drawn as strings.

A column chart of two stacked series with axes, ticks and percentile markers
(throughput over time, latency bins), and horizontal bars for errors by kind.
Every label from the data passes through ``esc``.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from .stats import width_ms

COLOURS = {
    "succeeded": "#2f9e44",
    "failed": "#e03131",
    "invalid": "#f08c00",
    "unknown": "#7048e8",
    "other": "#ff8787",
}
WIDTH = 1000
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 24, 58
MAX_X_LABELS = 8
ERROR_LABEL_CHARS = 70


def esc(value: Any) -> str:
    """Any value as HTML text, quotes included."""
    return html.escape(str(value), quote=True)


def column_chart(
    columns: Sequence[tuple[int, int]],
    colours: tuple[str, str],
    ticks: Sequence[tuple[float, str]],
    tips: Sequence[str],
    *,
    y_title: str,
    x_title: str,
    markers: Sequence[tuple[float | None, str]] = (),
) -> str:
    """A column chart of two stacked series, with axes, ticks and titles."""
    height = 320
    x0, x1, y0, y1 = LEFT, WIDTH - RIGHT, TOP, height - BOTTOM
    peak = max((a + b for a, b in columns), default=0) or 1
    step = nice_step(peak / 4)
    top = math.ceil(peak / step) * step
    width = (x1 - x0) / len(columns)
    gap = min(width * 0.18, 6.0) if len(columns) > 1 else width * 0.3

    def y(value: float) -> float:
        return y1 - (y1 - y0) * value / top

    parts = []
    for value in range(0, top + 1, step):
        parts.append(
            f'<line class="grid" x1="{x0}" x2="{x1}" y1="{y(value):.1f}" '
            f'y2="{y(value):.1f}"/><text x="{x0 - 8}" y="{y(value) + 4:.1f}" '
            f'text-anchor="end">{value:,}</text>'
        )
    for i, (first, second) in enumerate(columns):
        left = x0 + i * width + gap / 2
        bottom: float = y1
        for value, colour in ((first, colours[0]), (second, colours[1])):
            if value:
                size = y1 - y(value)
                parts.append(
                    f'<rect x="{left:.2f}" y="{bottom - size:.2f}" '
                    f'width="{width - gap:.2f}" height="{size:.2f}" fill="{colour}"/>'
                )
                bottom -= size
        parts.append(
            f'<rect x="{x0 + i * width:.2f}" y="{y0}" width="{width:.2f}" '
            f'height="{y1 - y0}" fill="transparent">'
            f"<title>{esc(tips[i])}</title></rect>"
        )
    every = max(1, math.ceil(len(ticks) / MAX_X_LABELS))
    for position, label in list(ticks)[::every]:
        x = x0 + position * width
        parts.append(
            f'<line class="axis" x1="{x:.1f}" x2="{x:.1f}" y1="{y1}" y2="{y1 + 5}"/>'
            f'<text x="{x:.1f}" y="{y1 + 19}" text-anchor="middle">{esc(label)}</text>'
        )
    parts.append(_markers(markers, x0, width, y0, y1))
    parts.append(
        f'<line class="axis" x1="{x0}" x2="{x1}" y1="{y1}" y2="{y1}"/>'
        f'<line class="axis" x1="{x0}" x2="{x0}" y1="{y0}" y2="{y1}"/>'
        f'<text class="title" x="{(x0 + x1) / 2:.0f}" y="{height - 12}" '
        f'text-anchor="middle">{esc(x_title)}</text>'
        f'<text class="title" transform="translate(16 {(y0 + y1) / 2:.0f}) '
        f'rotate(-90)" text-anchor="middle">{esc(y_title)}</text>'
    )
    return (
        f'<svg viewBox="0 0 {WIDTH} {height}" role="img" aria-label="'
        f'{esc(y_title)} by {esc(x_title)}">{"".join(parts)}</svg>'
    )


def _markers(
    markers: Sequence[tuple[float | None, str]],
    x0: float,
    width: float,
    y0: float,
    y1: float,
) -> str:
    parts = []
    right = WIDTH - RIGHT
    for i, (position, label) in enumerate(markers):
        if position is None:
            continue
        x = x0 + position * width
        # Labels near the right edge go on the line's left, so none is cut off.
        at, anchor = (x - 4, "end") if x > right - 110 else (x + 4, "start")
        parts.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{y0 - 4}" y2="{y1}" '
            'stroke="#323f4b" stroke-width="1.2" stroke-dasharray="4 3"/>'
            f'<text class="title marker" x="{at:.1f}" y="{y0 + 8 + 14 * i}" '
            f'text-anchor="{anchor}">{esc(label)}</text>'
        )
    return "".join(parts)


def nice_step(rough: float) -> int:
    """The 1, 2 or 5 times a power of ten at or above ``rough`` (at least 1)."""
    if rough <= 1:
        return 1
    power = 10 ** math.floor(math.log10(rough))
    for factor in (1, 2, 5, 10):
        if rough <= factor * power:
            return int(factor * power)
    return int(10 * power)


def bin_position(edges: Sequence[float], value: float | None) -> float | None:
    """Where ``value`` falls along bins with these edges, in bin widths."""
    if value is None:
        return None
    for i in range(len(edges) - 1):
        if edges[i] <= value < edges[i + 1]:
            return i + (value - edges[i]) / (edges[i + 1] - edges[i])
    return float(len(edges) - 1)


def parse_time(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def time_ticks(starts: Sequence[datetime], bucket_ms: int) -> list[tuple[float, str]]:
    """Axis labels at round times: the finest round step giving at most 8."""
    epoch_ms = [round(start.timestamp() * 1000) for start in starts]
    for level in range(64):
        step = width_ms(level)
        if step % bucket_ms:
            continue
        at = [i for i, ms in enumerate(epoch_ms) if ms % step == 0]
        if len(at) <= MAX_X_LABELS:
            break
    if len(at) < 2:
        at = sorted({0, len(starts) - 1})
    return [(i, time_label(starts[i], step / 1000, starts)) for i in at]


def time_label(start: datetime, width: float, starts: Sequence[datetime]) -> str:
    """A time on the axis, as precise as a step of ``width`` seconds needs."""
    if width >= 86_400:
        return start.strftime("%Y-%m-%d")
    if width < 1:
        millis = f"{start.microsecond // 1000:03d}".rstrip("0") or "0"
        text = f"{start:%H:%M:%S}.{millis}"
    else:
        text = start.strftime("%H:%M:%S" if width < 60 else "%H:%M")
    if starts[0].date() != starts[-1].date():
        text = start.strftime("%m-%d ") + text
    return text


def error_bars(top: Sequence[dict[str, Any]]) -> str:
    label_width, row_height = 470, 26
    height = row_height * len(top) + 8
    most = max(entry["rows"] for entry in top)
    room = WIDTH - label_width - 70
    parts = []
    for i, entry in enumerate(top):
        y = 4 + i * row_height
        length = max(2.0, room * entry["rows"] / most)
        kind = entry["kind"]
        short = (
            kind
            if len(kind) <= ERROR_LABEL_CHARS
            else kind[: ERROR_LABEL_CHARS - 1] + "…"
        )
        parts.append(
            f"<g><title>{esc(kind)}: {entry['rows']:,} rows</title>"
            f'<text x="{label_width - 10}" y="{y + 17}" text-anchor="end">'
            f"{esc(short)}</text>"
            f'<rect x="{label_width}" y="{y + 4}" width="{length:.1f}" '
            f'height="{row_height - 8}" rx="3" fill="{COLOURS["failed"]}"/>'
            f'<text x="{label_width + length + 8:.1f}" y="{y + 17}" class="title">'
            f"{entry['rows']:,}</text></g>"
        )
    return (
        f'<svg viewBox="0 0 {WIDTH} {height}" role="img" aria-label="errors by '
        f'kind">{"".join(parts)}</svg>'
    )
