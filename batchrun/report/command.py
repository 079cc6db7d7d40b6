"""The ``batchrun report`` click command: read, sum up, print, maybe write HTML."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import click

from ..errors import BatchrunError, UsageError
from .html import render_html
from .stats import analyse
from .text import render_text


@click.command()
@click.argument("output", metavar="OUTPUT")
@click.option(
    "--html",
    "html_path",
    metavar="FILE",
    help="Also write a self-contained HTML report (opens offline) to FILE.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def report(output: str, html_path: str | None, as_json: bool) -> None:
    """Sum up a run's OUTPUT file: statuses, errors, latency, throughput.

    Reads CSV, JSON Lines, Parquet or Excel output as a stream (a torn last
    record is ignored) and prints counts by status and error, latency
    percentiles, rows finished over time, retries and rows in doubt. Exit
    codes: 0 printed, 2 the file is missing, unreadable or not an output.
    """
    try:
        summary = analyse(output)
        if html_path:
            write_html(html_path, summary)
    except BatchrunError as error:
        click.echo(f"batchrun: error: {error}", err=True)
        sys.exit(error.exit_code)
    if as_json:
        click.echo(json.dumps(summary, indent=2, ensure_ascii=False))
    else:
        click.echo(render_text(summary))
    if html_path:
        click.echo(f"batchrun: wrote {html_path}", err=True)


def write_html(path: str, summary: dict[str, Any]) -> None:
    """Write the HTML report, whole, to ``path``."""
    temporary = path + ".tmp"
    try:
        with open(temporary, "w", encoding="utf-8") as file:
            file.write(render_html(summary))
        os.replace(temporary, path)
    except OSError as exc:
        raise UsageError(
            f"--html {path}: cannot write it ({exc.strerror}); name a file in a "
            "writable directory"
        ) from exc
