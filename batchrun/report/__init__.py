"""`batchrun report`: what a run's output file says, summed up.

The output is read as a stream, so memory stays flat however many records it
holds: counts by status, HTTP status and kind of error, latency percentiles,
rows finished over time, retries and rows in doubt. The summary is one
JSON-ready dict that the text, ``--json`` and ``--html`` renderings share.

The modules follow the data: ``reading`` (the four output formats, record by
record), ``stats`` (counting them: ``analyse``), ``text`` (the summary dict and
its text rendering), ``html`` and ``charts`` (the self-contained page) and
``command`` (the click command).
"""

from __future__ import annotations

from .command import report
from .html import render_html
from .stats import KEPT_BUCKETS, LatencyHistogram, Throughput, analyse, error_kind
from .text import render_text

__all__ = [
    "KEPT_BUCKETS",
    "LatencyHistogram",
    "Throughput",
    "analyse",
    "error_kind",
    "render_html",
    "render_text",
    "report",
]
