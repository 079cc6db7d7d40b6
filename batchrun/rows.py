"""The unit of work: one data row of the input, as a source reads it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class Row:
    """One data row of the input file.

    ``number`` is the 1-based position among the input's data rows (the
    header is not counted). ``line`` is where a person finds the row: the
    physical line of its first character for text files, the sheet row for
    workbooks, the 1-based row index for Parquet. ``values`` holds the row's
    values exactly as the file holds them, JSON-safe; it is None when the row
    cannot become a variable map, and then ``error`` says why. ``offset`` is
    the byte offset just past the row in the raw file when the source can be
    re-opened there (used to resume without re-reading), else None. ``raw``
    keeps the cells of a CSV row that has the wrong number of fields, so the
    failed-rows file can give them back.
    """

    number: int
    line: int
    values: dict[str, Any] | None
    error: str | None = None
    offset: int | None = None
    raw: list[str] | None = None
