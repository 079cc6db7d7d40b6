"""Turning typed cell values (Parquet, Excel) into JSON-safe values.

The rules keep every digit and never produce NaN or Infinity, which strict
JSON request bodies cannot carry:

- integers, text, booleans and None pass through;
- a float that is NaN or infinite becomes None;
- a Decimal becomes the text of its exact digits ("12345678901234567890.5");
- datetimes, dates and times become ISO 8601 text, keeping a time zone if
  the value has one; durations become "[-]H:MM:SS[.ffffff]";
- bytes become base64 text;
- lists, tuples and mappings are converted item by item (mapping keys
  become text); anything else becomes its text.
"""

from __future__ import annotations

import base64
import datetime as dt
import math
import uuid
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

# Length of "YYYY-MM-DDTHH:MM:SS.ffffff" and "HH:MM:SS.ffffff": where extra
# nanosecond digits go.
DATETIME_MICROS_END = 26
TIME_MICROS_END = 15


def json_safe(value: Any) -> Any:
    """Return ``value`` as something ``json.dumps(allow_nan=False)`` accepts."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Decimal):
        return decimal_text(value)
    if isinstance(value, (dt.date, dt.time)):  # datetime is a date too
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return duration_text(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, Mapping):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    if isinstance(value, uuid.UUID):
        return str(value)
    return str(value)


def decimal_text(value: Decimal) -> str | None:
    """Every digit of ``value`` in plain notation; None for NaN or infinity."""
    if not value.is_finite():
        return None
    return format(value, "f")


def duration_text(delta: dt.timedelta, nanos: int = 0) -> str:
    """A duration as "[-]H:MM:SS", with a fraction when there is one."""
    sign = "-" if delta < dt.timedelta(0) else ""
    delta = abs(delta)
    if sign and nanos:
        # abs() moved the whole microseconds; the nanosecond digits follow.
        delta -= dt.timedelta(microseconds=1)
        nanos = 1000 - nanos
    hours, rest = divmod(delta.days * 86400 + delta.seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    text = f"{sign}{hours}:{minutes:02d}:{seconds:02d}"
    if delta.microseconds or nanos:
        text += f".{delta.microseconds:06d}"
        if nanos:
            text += f"{nanos:03d}"
    return text


def with_nanos(value: dt.datetime | dt.time, nanos: int) -> str:
    """ISO 8601 text of ``value`` with ``nanos`` (0-999) more digits of fraction."""
    if not nanos:
        return value.isoformat()
    text = value.isoformat(timespec="microseconds")
    cut = DATETIME_MICROS_END if isinstance(value, dt.datetime) else TIME_MICROS_END
    return f"{text[:cut]}{nanos:03d}{text[cut:]}"
