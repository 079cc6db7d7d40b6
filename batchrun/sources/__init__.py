"""Input readers, one module per format, chosen by file extension or --format.

Every reader yields :class:`~batchrun.rows.Row` batches whose ``values`` are
exactly what the file holds, made JSON-safe; none guesses types.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass

from ..errors import InputError
from .base import DEFAULT_BATCH_SIZE, Position, Source

__all__ = [
    "COMPRESSIONS",
    "FORMATS",
    "Position",
    "Source",
    "SourceOptions",
    "detect_format",
    "open_source",
]

# format name -> (module, class); modules are imported only when used.
FORMATS: dict[str, tuple[str, str]] = {
    "csv": ("csv", "CsvSource"),
    "tsv": ("csv", "CsvSource"),
    "jsonl": ("jsonl", "JsonlSource"),
    "parquet": ("parquet", "ParquetSource"),
    "xlsx": ("excel", "ExcelSource"),
    "xls": ("excel", "ExcelSource"),
    "ods": ("excel", "ExcelSource"),
}

EXTENSIONS = {
    ".csv": "csv",
    ".txt": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".xlsx": "xlsx",
    ".xlsm": "xlsx",
    ".xls": "xls",
    ".ods": "ods",
}

COMPRESSIONS = {".gz": "gzip", ".zst": "zstd", ".bz2": "bz2"}


@dataclass(frozen=True, slots=True)
class SourceOptions:
    """Reader settings that come from the command line."""

    format: str | None = None
    encoding: str | None = None
    delimiter: str | None = None
    sheet: str | None = None
    batch_size: int = DEFAULT_BATCH_SIZE


def split_compression(path: str) -> tuple[str, str | None]:
    """Return the path without a compression suffix, and the compression."""
    root, ext = os.path.splitext(path)
    compression = COMPRESSIONS.get(ext.lower())
    return (root, compression) if compression else (path, None)


def detect_format(path: str, given: str | None = None) -> str:
    """Return the format name for ``path``, or raise InputError saying how to fix it."""
    if given:
        name = given.lower().lstrip(".")
        if name not in FORMATS:
            known = ", ".join(sorted(FORMATS))
            raise InputError(f"unknown --format {given!r}; use one of: {known}")
        return name
    if path == "-":
        raise InputError(
            "reading standard input needs --format (for example --format csv)"
        )
    root, _ = split_compression(path)
    ext = os.path.splitext(root)[1].lower()
    if ext not in EXTENSIONS:
        known = ", ".join(sorted(FORMATS))
        raise InputError(
            f"{path}: cannot tell the format from the extension {ext or '(none)'!r}; "
            f"rename the file or pass --format ({known})"
        )
    return EXTENSIONS[ext]


def open_source(path: str, options: SourceOptions | None = None) -> Source:
    """Open ``path`` with its format's reader; file-level problems raise InputError."""
    options = options or SourceOptions()
    fmt = detect_format(path, options.format)
    if path != "-" and not os.path.isfile(path):
        if os.path.isdir(path):
            raise InputError(f"{path}: is a directory; give the path of a data file")
        raise InputError(f"{path}: no such file; check the path")
    module_name, class_name = FORMATS[fmt]
    module = importlib.import_module(f"{__name__}.{module_name}")
    source: Source = getattr(module, class_name)(path, fmt, options)
    return source
