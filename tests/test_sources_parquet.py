"""Parquet input: exact integers, JSON-safe typed values, resume by row group."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batchrun.errors import InputError
from batchrun.rows import Row
from batchrun.sources import Position, SourceOptions, open_source
from batchrun.sources.values import json_safe


def write_table(tmp_path: Path, columns: dict[str, Any], **options: Any) -> str:
    path = str(tmp_path / "t.parquet")
    pq.write_table(pa.table(columns), path, **options)
    return path


def read(path: str, start: Position | None = None, **options: Any) -> list[Row]:
    with open_source(path, SourceOptions(**options)) as source:
        return [row for batch in source.batches(start) for row in batch]


def column(path: str, name: str) -> list[Any]:
    return [row.values[name] for row in read(path) if row.values is not None]


def test_parquet_integers_stay_exact(tmp_path: Path) -> None:
    path = write_table(
        tmp_path,
        {
            "i64": pa.array([2**63 - 1, -(2**63), None], pa.int64()),
            "u64": pa.array([2**64 - 1, 0, 1], pa.uint64()),
            "i8": pa.array([-128, 0, 127], pa.int8()),
        },
    )

    rows = read(path)

    assert [row.values for row in rows] == [
        {"i64": 2**63 - 1, "u64": 2**64 - 1, "i8": -128},
        {"i64": -(2**63), "u64": 0, "i8": 0},
        {"i64": None, "u64": 1, "i8": 127},
    ]
    assert [(row.number, row.line, row.offset) for row in rows] == [
        (1, 1, None),
        (2, 2, None),
        (3, 3, None),
    ]


def test_parquet_nan_infinity_and_null_floats_become_none(tmp_path: Path) -> None:
    path = write_table(
        tmp_path,
        {
            "f64": pa.array([1.5, float("nan"), float("inf"), -float("inf"), None]),
            "f32": pa.array([0.25, float("nan"), 2.0, None, -1.0], pa.float32()),
            "f16": pa.array([0.5, None, float("inf"), 1.0, 2.0]).cast(pa.float16()),
        },
    )

    rows = read(path)

    assert column(path, "f64") == [1.5, None, None, None, None]
    assert column(path, "f32") == [0.25, None, 2.0, None, -1.0]
    assert column(path, "f16") == [0.5, None, None, 1.0, 2.0]
    json.dumps([row.values for row in rows], allow_nan=False)


def test_parquet_timestamps_become_iso_text(tmp_path: Path) -> None:
    moment = dt.datetime(2024, 1, 2, 3, 4, 5)
    utc = moment.replace(tzinfo=dt.UTC)
    path = write_table(
        tmp_path,
        {
            "naive": pa.array([moment, None], pa.timestamp("us")),
            "micros": pa.array(
                [moment.replace(microsecond=120)] * 2, pa.timestamp("us")
            ),
            "utc": pa.array([utc, utc], pa.timestamp("ms", tz="UTC")),
            "paris": pa.array([utc, utc], pa.timestamp("s", tz="Europe/Paris")),
            "plus2": pa.array([utc, utc], pa.timestamp("us", tz="+02:00")),
        },
    )

    rows = read(path)

    assert rows[0].values == {
        "naive": "2024-01-02T03:04:05",
        "micros": "2024-01-02T03:04:05.000120",
        "utc": "2024-01-02T03:04:05+00:00",
        "paris": "2024-01-02T04:04:05+01:00",
        "plus2": "2024-01-02T05:04:05+02:00",
    }
    assert rows[1].values is not None and rows[1].values["naive"] is None


def test_parquet_nanosecond_timestamps_keep_every_digit(tmp_path: Path) -> None:
    nanos = [1704164645123456789, 1704164645000000000, -1, None]
    path = write_table(
        tmp_path,
        {
            "naive": pa.array(nanos, pa.timestamp("ns")),
            "utc": pa.array(nanos, pa.timestamp("ns", tz="UTC")),
        },
    )

    assert column(path, "naive") == [
        "2024-01-02T03:04:05.123456789",
        "2024-01-02T03:04:05",
        "1969-12-31T23:59:59.999999999",
        None,
    ]
    assert column(path, "utc")[0] == "2024-01-02T03:04:05.123456789+00:00"


def test_parquet_dates_times_and_durations(tmp_path: Path) -> None:
    path = write_table(
        tmp_path,
        {
            "date": pa.array([dt.date(2024, 1, 2), None], pa.date32()),
            "date64": pa.array([dt.date(2024, 1, 2)] * 2, pa.date64()),
            "time": pa.array([dt.time(3, 4, 5), dt.time(0, 0)], pa.time32("s")),
            "time_ns": pa.array([11_045_000_000_001, None], pa.time64("ns")),
            "dur": pa.array([dt.timedelta(days=1, seconds=9), None], pa.duration("s")),
            "dur_ns": pa.array([93_784_000_000_001, -1], pa.duration("ns")),
        },
    )

    rows = read(path)

    assert [row.values for row in rows] == [
        {
            "date": "2024-01-02",
            "date64": "2024-01-02",
            "time": "03:04:05",
            "time_ns": "03:04:05.000000001",
            "dur": "24:00:09",
            "dur_ns": "26:03:04.000000001",
        },
        {
            "date": None,
            "date64": "2024-01-02",
            "time": "00:00:00",
            "time_ns": None,
            "dur": None,
            "dur_ns": "-0:00:00.000000001",
        },
    ]


def test_parquet_decimals_keep_every_digit(tmp_path: Path) -> None:
    path = write_table(
        tmp_path,
        {
            "big": pa.array(
                [Decimal("12345678901234567890.123456789"), Decimal("-0.000000001")],
                pa.decimal128(38, 9),
            ),
            "tiny": pa.array([Decimal("1E-7"), None], pa.decimal128(10, 7)),
            "wide": pa.array(
                [Decimal("1" * 50 + ".5"), Decimal(0)], pa.decimal256(60, 1)
            ),
        },
    )

    rows = read(path)

    assert [row.values for row in rows] == [
        {
            "big": "12345678901234567890.123456789",
            "tiny": "0.0000001",
            "wide": "1" * 50 + ".5",
        },
        {"big": "-0.000000001", "tiny": None, "wide": "0.0"},
    ]


def test_parquet_binary_becomes_base64(tmp_path: Path) -> None:
    path = write_table(
        tmp_path,
        {
            "b": pa.array([b"\x00\xffhi", None], pa.binary()),
            "fixed": pa.array([b"ab", b"cd"], pa.binary(2)),
        },
    )

    assert column(path, "b") == ["AP9oaQ==", None]
    assert column(path, "fixed") == ["YWI=", "Y2Q="]


def test_parquet_nested_values_become_arrays_and_objects(tmp_path: Path) -> None:
    struct_type = pa.struct(
        [("n", pa.int64()), ("when", pa.date32()), ("f", pa.float64())]
    )
    path = write_table(
        tmp_path,
        {
            "list": pa.array([[1, None, 3], []], pa.list_(pa.int64())),
            "floats": pa.array([[1.5, float("nan")], None], pa.list_(pa.float64())),
            "struct": pa.array(
                [{"n": 2**62, "when": dt.date(2024, 1, 2), "f": float("inf")}, None],
                struct_type,
            ),
            "map": pa.array([[("k", b"\x01")], []], pa.map_(pa.string(), pa.binary())),
        },
    )

    rows = read(path)

    assert [row.values for row in rows] == [
        {
            "list": [1, None, 3],
            "floats": [1.5, None],
            "struct": {"n": 2**62, "when": "2024-01-02", "f": None},
            "map": {"k": "AQ=="},
        },
        {"list": [], "floats": None, "struct": None, "map": {}},
    ]


def test_parquet_dictionary_encoded_gives_values(tmp_path: Path) -> None:
    path = write_table(
        tmp_path,
        {
            "city": pa.array(["Oslo", "Lima", None, "Oslo"]).dictionary_encode(),
            "price": pa.array([1.5, float("nan"), 2.0, None]).dictionary_encode(),
        },
    )

    assert column(path, "city") == ["Oslo", "Lima", None, "Oslo"]
    assert column(path, "price") == [1.5, None, 2.0, None]


def test_parquet_batches_hold_at_most_batch_size_rows(tmp_path: Path) -> None:
    path = write_table(tmp_path, {"n": list(range(10))}, row_group_size=4)

    with open_source(path, SourceOptions(batch_size=3)) as source:
        batches = list(source.batches())

    assert all(len(batch) <= 3 for batch in batches)
    assert [row.number for batch in batches for row in batch] == list(range(1, 11))


@pytest.mark.parametrize("done", [0, 3, 4, 5, 8, 9, 10, 12])
def test_parquet_resume_skips_done_rows(tmp_path: Path, done: int) -> None:
    path = write_table(tmp_path, {"n": list(range(1, 11))}, row_group_size=4)

    rows = read(path, Position(done, done), batch_size=3)

    assert [(row.number, row.line) for row in rows] == [
        (n, n) for n in range(done + 1, 11)
    ]
    assert [row.values for row in rows] == [{"n": n} for n in range(done + 1, 11)]


def test_parquet_resume_leaves_done_row_groups_unread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_table(tmp_path, {"n": list(range(1, 11))}, row_group_size=4)
    asked: list[list[int]] = []
    real = pq.ParquetFile.iter_batches

    def spy(self: pq.ParquetFile, *args: Any, **kwargs: Any) -> Any:
        asked.append(list(kwargs["row_groups"]))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(pq.ParquetFile, "iter_batches", spy)

    rows = read(path, Position(9, 9))

    assert asked == [[2]]
    assert [(row.number, row.values) for row in rows] == [(10, {"n": 10})]


def test_parquet_not_parquet_raises(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    path.write_text("id,name\n1,Ann\n")

    with pytest.raises(InputError) as caught:
        read(str(path))

    message = str(caught.value)
    assert message.startswith(f"{path}: not a readable Parquet file (")
    assert message.endswith(
        "); check the file, or pass --format if it holds another format"
    )
    assert "\n" not in message


@pytest.mark.parametrize("name", ["-", "t.parquet.gz"])
def test_parquet_stdin_or_compressed_raises(tmp_path: Path, name: str) -> None:
    path = name if name == "-" else str(tmp_path / name)
    if path != "-":
        Path(path).write_bytes(b"")

    with pytest.raises(InputError) as caught:
        read(path, format="parquet")

    assert str(caught.value) == (
        f"{path}: Parquet is read from an uncompressed file, not from standard "
        "input or a compressed file; save or decompress it first"
    )


def test_parquet_columns_follow_the_schema(tmp_path: Path) -> None:
    path = write_table(tmp_path, {"b": [1], "a": ["x"]})

    with open_source(path) as source:
        assert source.columns == ["b", "a"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (Decimal("NaN"), None),
        (Decimal("-1.50E+3"), "-1500"),
        (dt.timedelta(seconds=-90), "-0:01:30"),
        (dt.timedelta(microseconds=5), "0:00:00.000005"),
        ((1, float("nan"), b"\x01"), [1, None, "AQ=="]),
        ({1: dt.time(1, 2)}, {"1": "01:02:00"}),
        (uuid.UUID(int=1), "00000000-0000-0000-0000-000000000001"),
    ],
)
def test_json_safe(value: Any, expected: Any) -> None:
    assert json_safe(value) == expected
