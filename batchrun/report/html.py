"""The ``--html`` rendering of a report: one self-contained page.

Everything is inline: CSS in a style element, charts as SVG (drawn in
``charts.py``). The page loads nothing (its Content-Security-Policy forbids
it) and runs no script, so it opens offline and hostile text from the data
can do nothing; every value from the data is HTML-escaped all the same.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from .charts import (
    COLOURS,
    WIDTH,
    bin_position,
    column_chart,
    error_bars,
    esc,
    parse_time,
    time_label,
    time_ticks,
)
from .reading import FORMAT_NAMES, STATUSES
from .text import format_duration, format_ms, format_rate, share

__all__ = ["render_html"]

CSS = """
*{box-sizing:border-box}
body{margin:0;background:#f4f5f7;color:#1f2933;
 font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",
 Arial,sans-serif}
main{max-width:1080px;margin:0 auto;padding:28px 24px 40px}
header h1{margin:0;font-size:22px;font-weight:650;letter-spacing:-.01em}
header p{margin:4px 0 0;color:#52606d}
code{font:12.5px ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;
 background:#e9ecef;padding:1px 5px;border-radius:4px;overflow-wrap:anywhere}
.kpis{display:grid;grid-template-columns:repeat(auto-fit,minmax(118px,1fr));gap:10px;
 margin:20px 0}
.kpi{background:#fff;border:1px solid #e1e5ea;border-left:4px solid #9aa5b1;
 border-radius:8px;padding:10px 14px}
.kpi .label{font-size:12px;color:#616e7c;text-transform:uppercase;letter-spacing:.04em}
.kpi .value{font-size:22px;font-weight:650;font-variant-numeric:tabular-nums;
 white-space:nowrap}
.kpi .sub{font-size:12px;color:#7b8794}
section{background:#fff;border:1px solid #e1e5ea;border-radius:8px;padding:18px 20px;
 margin:0 0 16px}
section h2{margin:0 0 4px;font-size:16px;font-weight:650}
section .lede{margin:0 0 12px;color:#616e7c;font-size:13px}
svg{display:block;width:100%;height:auto}
svg text{font:12px system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif;
 fill:#52606d}
svg .title{fill:#3e4c59;font-weight:600}
svg .marker{paint-order:stroke;stroke:#fff;stroke-width:3px;stroke-linejoin:round}
svg .grid{stroke:#e4e7eb;stroke-width:1}
svg .axis{stroke:#9aa5b1;stroke-width:1}
.legend{display:flex;flex-wrap:wrap;gap:16px;margin:8px 0 0;font-size:12.5px;
 color:#52606d}
.legend span::before{content:"";display:inline-block;width:10px;height:10px;
 border-radius:2px;margin-right:6px;background:var(--c)}
table{width:100%;border-collapse:collapse;font-size:13px}
th,td{text-align:left;padding:7px 10px;border-bottom:1px solid #edf0f2;
 vertical-align:top}
th{font-size:12px;color:#616e7c;font-weight:600;text-transform:uppercase;
 letter-spacing:.03em}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.text{overflow-wrap:anywhere}
.two{display:grid;grid-template-columns:1fr 1fr;gap:16px}
.two section{margin:0}
dl{display:grid;grid-template-columns:auto 1fr;gap:6px 16px;margin:0;font-size:13px}
dt{color:#616e7c}dd{margin:0;font-variant-numeric:tabular-nums}
.empty{color:#7b8794;font-style:italic;margin:8px 0}
ul.notes{margin:0;padding-left:18px;color:#52606d;font-size:13px}
footer{color:#7b8794;font-size:12px;margin-top:20px}
@media (max-width:760px){.two{grid-template-columns:1fr}}
"""


def render_html(summary: dict[str, Any]) -> str:
    """The whole report page for a summary made by ``analyse``."""
    s = summary
    body = [
        _header(s),
        _kpis(s),
        _status_section(s),
        _throughput_section(s),
        _latency_section(s),
        _errors_section(s["errors"], s["rows"]),
        '<div class="two">' + _retries_section(s) + _notes_section(s) + "</div>",
        _footer(),
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "style-src 'unsafe-inline'\">"
        f"<title>batchrun report: {esc(s['output'])}</title>"
        f"<style>{CSS}</style></head><body><main>\n"
        + "\n".join(body)
        + "\n</main></body></html>\n"
    )


# ------------------------------------------------------------------ sections


def _header(s: dict[str, Any]) -> str:
    time = s["time"]
    span = ""
    if time["rows"]:
        span = (
            f" · {esc(_when(time['first_start']))} to "
            f"{esc(_when(time['last_finish']))} UTC"
        )
    return (
        "<header><h1>Batch run report</h1>"
        f"<p><code>{esc(s['output'])}</code> · {esc(FORMAT_NAMES[s['format']])}"
        f" · {s['records']:,} records{span}</p></header>"
    )


def _when(stamp: str) -> str:
    return stamp.replace("T", " ").rstrip("Z")


def _kpis(s: dict[str, Any]) -> str:
    rows, statuses, time = s["rows"], s["statuses"], s["time"]
    cards = [_kpi("Rows", f"{rows:,}", f"{s['records']:,} records read", "#52606d")]
    for name in STATUSES:
        cards.append(
            _kpi(
                name.title(),
                f"{statuses[name]:,}",
                share(statuses[name], rows),
                COLOURS[name],
            )
        )
    if time["seconds"] is not None:
        rate = time["rows_per_second"]
        cards.append(
            _kpi(
                "Elapsed",
                format_duration(time["seconds"]),
                "first start to last answer",
                "#1971c2",
            )
        )
        cards.append(
            _kpi(
                "Mean rate",
                f"{format_rate(rate)}/s" if rate else "-",
                "rows per second",
                "#1971c2",
            )
        )
    return '<div class="kpis">' + "".join(cards) + "</div>"


def _kpi(label: str, value: str, sub: str, colour: str) -> str:
    return (
        f'<div class="kpi" style="border-left-color:{colour}">'
        f'<div class="label">{esc(label)}</div><div class="value">{esc(value)}</div>'
        f'<div class="sub">{esc(sub)}</div></div>'
    )


def _status_section(s: dict[str, Any]) -> str:
    rows, statuses = s["rows"], s["statuses"]
    if not rows:
        return _section("Outcomes", "", '<p class="empty">No records yet.</p>')
    height, x, parts = 26, 0.0, []
    for name in STATUSES:
        width = WIDTH * statuses[name] / rows
        if width:
            parts.append(
                f'<rect x="{x:.2f}" y="0" width="{width:.2f}" height="{height}" '
                f'fill="{COLOURS[name]}"><title>{name}: {statuses[name]:,}'
                f"</title></rect>"
            )
        x += width
    chart = (
        f'<svg viewBox="0 0 {WIDTH} {height}" role="img" aria-label="rows by '
        f'status"><clipPath id="round"><rect width="{WIDTH}" height="{height}" '
        f'rx="6"/></clipPath><g clip-path="url(#round)">{"".join(parts)}</g></svg>'
    )
    legend = _legend(
        (f"{name} {statuses[name]:,} ({share(statuses[name], rows)})", COLOURS[name])
        for name in STATUSES
    )
    return _section(
        "Outcomes", "The last record of every row, by status.", chart + legend
    )


def _throughput_section(s: dict[str, Any]) -> str:
    throughput = s["throughput"]
    buckets, width = throughput["buckets"], throughput["bucket_seconds"]
    if not buckets:
        empty = '<p class="empty">No row has a start time.</p>'
        return _section("Throughput", "", empty)
    title = f"Throughput: rows finished per {format_duration(width)}"
    starts = [parse_time(bucket["start"]) for bucket in buckets]
    columns = [(b["succeeded"], b["rows"] - b["succeeded"]) for b in buckets]
    ticks = time_ticks(starts, round(width * 1000))
    labels = [time_label(start, width, starts) for start in starts]
    tips = [
        f"{labels[i]}: {b['rows']:,} rows ({b['succeeded']:,} succeeded)"
        for i, b in enumerate(buckets)
    ]
    chart = column_chart(
        columns,
        (COLOURS["succeeded"], COLOURS["failed"]),
        ticks,
        tips,
        y_title=f"rows per {format_duration(width)}",
        x_title="time (UTC), by when each row's final answer came",
    )
    lede = (
        f"{s['time']['rows']:,} rows over {format_duration(s['time']['seconds'])};"
        " bars start at the time shown."
    )
    legend = _legend(
        [("succeeded", COLOURS["succeeded"]), ("failed or unknown", COLOURS["failed"])]
    )
    return _section(title, lede, chart + legend)


def _latency_section(s: dict[str, Any]) -> str:
    latency = s["latency"]
    bins = latency["histogram"]
    title = "Latency: first attempt to final answer"
    if not bins:
        return _section(title, "", '<p class="empty">No answered rows.</p>')
    columns = [(b["succeeded"], b["other"]) for b in bins]
    edges = [b["from_ms"] for b in bins] + [bins[-1]["to_ms"]]
    ticks = [(i, format_ms(edge)) for i, edge in enumerate(edges)]
    tips = [
        f"{format_ms(b['from_ms'])} to {format_ms(b['to_ms'])}: "
        f"{b['succeeded'] + b['other']:,} rows"
        for b in bins
    ]
    main = (
        latency["succeeded"] if latency["succeeded"]["count"] else latency["answered"]
    )
    markers = [
        (bin_position(edges, main[key]), f"{key} {format_ms(main[key])}")
        for key in ("p50", "p90", "p99")
    ]
    chart = column_chart(
        columns,
        (COLOURS["succeeded"], COLOURS["other"]),
        ticks,
        tips,
        y_title="rows",
        x_title="latency (log-spaced bins)",
        markers=markers,
    )
    legend = _legend(
        [
            ("succeeded", COLOURS["succeeded"]),
            ("answered, not succeeded", COLOURS["other"]),
        ]
    )
    return _section(
        title,
        "Rows that got an answer; dashed lines mark the percentiles of "
        + ("succeeded" if main is latency["succeeded"] else "answered")
        + " rows.",
        chart + legend + _percentile_table(latency),
    )


def _percentile_table(latency: dict[str, Any]) -> str:
    head = "".join(
        f'<th class="num">{k}</th>' for k in ("rows", "p50", "p90", "p99", "max")
    )
    rows = []
    for name in ("succeeded", "answered"):
        part = latency[name]
        cells = [f"{part['count']:,}"] + [
            format_ms(part[key]) for key in ("p50", "p90", "p99", "max")
        ]
        rows.append(
            f"<tr><td>{name}</td>"
            + "".join(f'<td class="num">{esc(cell)}</td>' for cell in cells)
            + "</tr>"
        )
    return (
        f'<table style="margin-top:14px"><tr><th></th>{head}</tr>{"".join(rows)}'
        f'</table><p class="lede" style="margin-top:8px">Precision: '
        f"{esc(latency['precision'])}.</p>"
    )


def _errors_section(errors: dict[str, Any], rows: int) -> str:
    title = "Errors by kind"
    top = errors["top"]
    if not top:
        return _section(title, "", '<p class="empty">No row has an error.</p>')
    lede = (
        f"{errors['rows']:,} rows with an error, {errors['kinds']:,} "
        f"{'kind' if errors['kinds'] == 1 else 'kinds'}. Numbers "
        "and ids that differ from row to row are shown as N and ID."
    )
    return _section(title, lede, error_bars(top) + _error_table(errors, rows))


def _error_table(errors: dict[str, Any], rows: int) -> str:
    lines = []
    for rank, entry in enumerate(errors["top"], start=1):
        statuses = ", ".join(f"{name} {n:,}" for name, n in entry["statuses"].items())
        lines.append(
            f'<tr><td class="num">{rank}</td><td class="text">{esc(entry["kind"])}'
            f'</td><td class="num">{entry["rows"]:,}</td><td class="num">'
            f"{share(entry['rows'], rows)}</td><td>{esc(statuses)}</td>"
            f'<td class="text"><code>{esc(entry["example"])}</code></td></tr>'
        )
    if errors["other_rows"]:
        lines.append(
            f'<tr><td></td><td class="text">rarer kinds</td><td class="num">'
            f"{errors['other_rows']:,}</td><td></td><td></td><td></td></tr>"
        )
    return (
        '<table style="margin-top:14px"><tr><th class="num">#</th><th>Kind</th>'
        '<th class="num">Rows</th><th class="num">Share</th><th>Status</th>'
        "<th>Example</th></tr>" + "".join(lines) + "</table>"
    )


def _retries_section(s: dict[str, Any]) -> str:
    retries, doubt = s["retries"], s["in_doubt"]
    unknown = ", ".join(doubt["unknown_rows"]) or "none"
    if doubt["unknown"] > len(doubt["unknown_rows"]):
        unknown += ", …"
    items = [
        ("Retries", f"{retries['retries']:,}"),
        ("Rows retried", f"{retries['rows']:,}"),
        ("Most attempts", f"{retries['most_attempts']:,}"),
        (
            "Sent again after an interruption",
            f"{doubt['resent']:,} ({doubt['resent_succeeded']:,} succeeded)",
        ),
        ("Unknown rows", f"{doubt['unknown']:,}"),
        ("Unknown: check by hand", unknown),
    ]
    body = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in items)
    return _section("Retries and rows in doubt", "", f"<dl>{body}</dl>")


def _notes_section(s: dict[str, Any]) -> str:
    notes = [f"Read from <code>{esc(s['read'])}</code>."]
    if s["read"] != s["output"]:
        notes.append(
            "The run has not finished: its journal was read, since the "
            f"{esc(FORMAT_NAMES.get(s['output'].rsplit('.', 1)[-1], ''))}"
            " file is written when the run completes."
        )
    if s["superseded_records"]:
        notes.append(
            f"{s['superseded_records']:,} earlier records of rows recorded again "
            "are not counted: the last record of a row counts."
        )
    if s["torn_tail"]:
        notes.append("The last record was cut short (a run was stopped) and ignored.")
    if s["damaged_records"]:
        notes.append(f"{s['damaged_records']:,} damaged records were skipped.")
    notes.append(
        "Times are UTC. Elapsed time runs from the first start to the last "
        "answer and includes any pause between sessions."
    )
    items = "".join(f"<li>{note}</li>" for note in notes)
    return _section("Notes", "", f'<ul class="notes">{items}</ul>')


def _footer() -> str:
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"<footer>Made by batchrun report at {now}.</footer>"


def _section(title: str, lede: str, content: str) -> str:
    lede_html = f'<p class="lede">{esc(lede)}</p>' if lede else ""
    return f"<section><h2>{esc(title)}</h2>{lede_html}{content}</section>"


def _legend(items: Any) -> str:
    spans = "".join(
        f'<span style="--c:{colour}">{esc(text)}</span>' for text, colour in items
    )
    return f'<div class="legend">{spans}</div>'
