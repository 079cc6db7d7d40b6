"""Parquet input, read a record batch at a time, values made JSON-safe.

Integers stay exact, NaN, infinities and nulls become None, decimals keep
every digit as text, timestamps, dates and times become ISO 8601 text
(nanoseconds included), binary becomes base64 text and lists, structs and
maps become arrays and objects. A row's ``line`` is its 1-based index.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from ..errors import InputError
from ..rows import Row
from . import textio
from .base import Position, Source
from .values import decimal_text, duration_text, json_safe, with_nanos

if TYPE_CHECKING:
    import pyarrow as pa

    from . import SourceOptions

Converter = Callable[["pa.Array"], list[Any]]


def _plain(array: pa.Array) -> list[Any]:
    return array.to_pylist()  # type: ignore[no-any-return]


def _floats(array: pa.Array) -> list[Any]:
    isfinite = math.isfinite
    return [v if v is None or isfinite(v) else None for v in array.to_pylist()]


def _decimals(array: pa.Array) -> list[Any]:
    return [None if v is None else decimal_text(v) for v in array.to_pylist()]


def _nested(array: pa.Array) -> list[Any]:
    return [json_safe(v) for v in array.to_pylist(maps_as_pydicts="lossy")]


def _nanoseconds(array: pa.Array) -> list[Any]:
    """Timestamps, times and durations in nanoseconds, without losing digits.

    The values are split into whole microseconds, which Python's types hold,
    and the remaining 0-999 nanoseconds, appended to the text.
    """
    import pyarrow as pa

    unit_type = array.type
    if pa.types.is_timestamp(unit_type):
        micro_type = pa.timestamp("us", tz=unit_type.tz)
    elif pa.types.is_time(unit_type):
        micro_type = pa.time64("us")
    else:
        micro_type = pa.duration("us")
    micros = array.cast(micro_type, safe=False)
    wide = pa.int64()
    result: list[Any] = []
    for value, whole, total in zip(
        micros.to_pylist(),
        micros.cast(wide).to_pylist(),
        array.cast(wide).to_pylist(),
        strict=True,
    ):
        if value is None:
            result.append(None)
            continue
        nanos = total - whole * 1000
        if nanos < 0:  # the cast truncated a negative value towards zero
            value -= dt.timedelta(microseconds=1)
            nanos += 1000
        if isinstance(value, dt.timedelta):
            result.append(duration_text(value, nanos))
        else:
            result.append(with_nanos(value, nanos))
    return result


def converter_for(arrow_type: pa.DataType) -> Converter:
    """The function turning a column of ``arrow_type`` into JSON-safe values."""
    import pyarrow as pa

    types = pa.types
    if types.is_dictionary(arrow_type):
        inner = converter_for(arrow_type.value_type)
        return lambda array: inner(array.dictionary_decode())
    if types.is_float16(arrow_type):
        return lambda array: _floats(array.cast(pa.float32()))
    if types.is_floating(arrow_type):
        return _floats
    if types.is_decimal(arrow_type):
        return _decimals
    is_temporal = types.is_timestamp(arrow_type) or types.is_time(arrow_type)
    if is_temporal or types.is_duration(arrow_type):
        if getattr(arrow_type, "unit", "") == "ns":
            return _nanoseconds
        return _nested
    simple = (
        types.is_integer(arrow_type)
        or types.is_boolean(arrow_type)
        or types.is_null(arrow_type)
        or types.is_string(arrow_type)
        or types.is_large_string(arrow_type)
    )
    return _plain if simple else _nested


class ParquetSource(Source):
    """Reads a Parquet file by record batches; resumes by skipping row groups."""

    def __init__(self, path: str, fmt: str, options: SourceOptions) -> None:
        super().__init__(path, fmt, options)
        if path == "-" or textio.suffix_compression(path):
            raise InputError(
                f"{path}: Parquet is read from an uncompressed file, not from "
                "standard input or a compressed file; save or decompress it first"
            )
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            self._file = pq.ParquetFile(path)
        except (pa.ArrowException, OSError) as exc:
            raise InputError(
                f"{path}: not a readable Parquet file ({_reason(exc)}); check the "
                "file, or pass --format if it holds another format"
            ) from None
        schema = self._file.schema_arrow
        self._columns = [str(name) for name in schema.names]
        try:
            self._check_columns()
        except InputError:
            self.close()
            raise
        self._converters = [converter_for(field.type) for field in schema]

    @property
    def columns(self) -> list[str]:
        """The schema's column names, in file order."""
        return list(self._columns)

    def estimated_rows(self) -> int | None:
        return int(self._file.metadata.num_rows)

    def close(self) -> None:
        self._file.close()

    def batches(self, start: Position | None = None) -> Iterator[list[Row]]:
        """Yield row batches; with ``start``, whole row groups are skipped unread."""
        import pyarrow as pa

        metadata = self._file.metadata
        skip = start.row if start is not None else 0
        first, number = 0, 0
        while first < metadata.num_row_groups:
            rows = metadata.row_group(first).num_rows
            if number + rows > skip:
                break
            number += rows
            first += 1
        groups = list(range(first, metadata.num_row_groups))
        if not groups:
            return
        batches = self._file.iter_batches(
            batch_size=self.batch_size, row_groups=groups, use_threads=True
        )
        try:
            for batch in batches:
                if number < skip:
                    dropped = min(skip - number, batch.num_rows)
                    batch = batch.slice(dropped)
                    number += dropped
                if batch.num_rows:
                    yield self._rows(batch, number)
                    number += batch.num_rows
        except (pa.ArrowException, OSError) as exc:
            raise InputError(
                f"{self.path}, row {number + 1}: the file is damaged "
                f"({_reason(exc)}); check or re-create the file"
            ) from None

    def _rows(self, batch: pa.RecordBatch, number: int) -> list[Row]:
        columns = [
            convert(batch.column(index))
            for index, convert in enumerate(self._converters)
        ]
        names = self._columns
        rows = []
        for values in zip(*columns, strict=True):
            number += 1
            rows.append(Row(number, number, dict(zip(names, values, strict=True))))
        return rows

    def _check_columns(self) -> None:
        if not self._columns:
            raise InputError(f"{self.path}: the Parquet file has no columns")
        seen: dict[str, list[int]] = {}
        for index, name in enumerate(self._columns, 1):
            seen.setdefault(name, []).append(index)
        repeated = [
            f"{name!r} (columns {', '.join(map(str, places))})"
            for name, places in seen.items()
            if len(places) > 1
        ]
        if repeated:
            raise InputError(
                f"{self.path}: the schema repeats column names: "
                f"{'; '.join(repeated)}; rename them so every column is unique"
            )


def _reason(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
