"""`batchrun check`: read an input as a run would, send nothing, say what is wrong.

The check uses the run's own reader and variable mapping, so what it prints
is exactly what a run would send, and every row it calls a problem is a row
a run would record as invalid (or, for duplicate keys, refuse to start).
"""

from __future__ import annotations

import json
import sys
from typing import Any, TextIO

from .config import Mapping
from .errors import EXIT_OK, EXIT_ROWS_FAILED, InputError
from .resume import key_text
from .sources import SourceOptions, open_source
from .variables import RowProblem, VariableMapper, encode_body

MAX_LISTED = 50


def check_header(
    path: str,
    columns: list[str] | None,
    mapper: VariableMapper,
    key_column: str | None,
) -> None:
    """Raise InputError if the mapping or --key-column does not fit the header.

    Formats without a header (JSON Lines) are checked row by row instead.
    """
    if columns is None:
        return
    try:
        mapper.check_columns(columns)
    except RowProblem as exc:
        raise InputError(f"{path}: {exc}") from None
    if key_column and key_column not in columns:
        raise InputError(
            f"{path}: --key-column {key_column!r} is not a column; the header "
            f"has: {', '.join(columns)}"
        )


def check_input(
    path: str,
    options: SourceOptions,
    mapping: Mapping,
    *,
    key_column: str | None = None,
    limit: int | None = None,
    offset: int = 0,
    show: int = 3,
    out: TextIO | None = None,
) -> int:
    """Print the check's findings; return the exit code (0 clean, 1 problems)."""
    out = out or sys.stdout
    mapper = VariableMapper(mapping)
    problems: list[str] = []
    extra = 0
    samples: list[dict[str, Any]] = []
    variables_seen: dict[str, None] = {}
    keys: dict[str, int] = {}
    rows = 0

    def problem(text: str) -> None:
        nonlocal extra
        if len(problems) < MAX_LISTED:
            problems.append(text)
        else:
            extra += 1

    with open_source(path, options) as source:
        source.check()
        columns = source.columns
        check_header(path, columns, mapper, key_column)
        last = offset + limit if limit is not None else None
        for batch in source.batches():
            for row in batch:
                if row.number <= offset:
                    continue
                if last is not None and row.number > last:
                    break
                rows += 1
                where = f"row {row.number} (line {row.line})"
                if row.values is None:
                    problem(f"row {row.number}: {row.error}")
                    continue
                if key_column:
                    key = key_text(row.values.get(key_column))
                    if key == "":
                        problem(f"{where}: empty {key_column}")
                    elif key in keys:
                        problem(
                            f"{where}: duplicate {key_column} {key!r} "
                            f"(first on line {keys[key]})"
                        )
                    else:
                        keys[key] = row.line
                try:
                    variables = mapper.variables(row.values, f"<row-id-{row.number}>")
                    encode_body(variables)
                except RowProblem as exc:
                    problem(f"{where}: {exc}")
                    continue
                for name in variables:
                    variables_seen.setdefault(name)
                if len(samples) < show:
                    samples.append(variables)
            if last is not None and rows >= limit:  # type: ignore[operator]
                break

    write = out.write
    write(f"{path}: {rows:,} rows\n")
    if columns is not None:
        write(f"columns: {', '.join(columns)}\n")
    write(f"variables sent: {', '.join(variables_seen) or '(none)'}\n")
    for number, sample in enumerate(samples, 1):
        text = json.dumps(sample, ensure_ascii=False, allow_nan=False)
        write(f"example {number}: {text}\n")
    total = len(problems) + extra
    if not total:
        write("no problems found\n")
        return EXIT_OK
    write(f"{total:,} problem(s):\n")
    for text in problems:
        write(f"  {text}\n")
    if extra:
        write(f"  ... and {extra:,} more\n")
    return EXIT_ROWS_FAILED
