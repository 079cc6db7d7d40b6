"""Output sinks: append, scan back, torn tails, damage, full disks, final formats."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import pytest

from batchrun.errors import CheckpointError, OutputError, UsageError
from batchrun.sinks import RESULT_FIELDS, Sink, open_sink, spreadsheet_safe
from batchrun.sinks.columnar import ExcelSink, ParquetSink
from batchrun.sinks.text import CsvSink, JsonlSink

FIELDS = ("first", "note", *RESULT_FIELDS)
TEXT_SINKS: list[SinkType] = [CsvSink, JsonlSink]
SinkType = type[Sink]


def record(row: int, status: str = "succeeded", **changes: Any) -> list[Any]:
    """A record in FIELDS order."""
    values: dict[str, Any] = {
        "first": f"name {row}",
        "note": "plain",
        "row": row,
        "status": status,
        "http_status": 200,
        "session_id": f"s-{row}",
        "error": None,
        "attempts": 1,
        "resent": False,
        "started_at": "2024-05-01T10:00:00Z",
        "latency_ms": 120 + row,
        "row_id": f"run-{row}",
    }
    values.update(changes)
    return [values[name] for name in FIELDS]


def new_sink(kind: SinkType, tmp_path: Path, fields: tuple[str, ...] = FIELDS) -> Sink:
    sink = kind(str(tmp_path / f"out{kind.extension}"), fields)
    sink.create()
    return sink


def write_records(sink: Sink, rows: range) -> list[int]:
    """Append one record per row, each in its own write; return the ends."""
    return [sink.append(sink.encode([record(row)])) for row in rows]


def scan_all(sink: Sink) -> list[Any]:
    return list(sink.scan(len(sink.header())))


# ------------------------------------------------------------- round trip


@pytest.mark.parametrize("kind", TEXT_SINKS)
def test_appended_records_scan_back_with_offsets(
    kind: SinkType, tmp_path: Path
) -> None:
    sink = new_sink(kind, tmp_path)
    header_end = sink.end
    ends = write_records(sink, range(1, 6))
    sink.close()

    scanned = scan_all(sink)

    assert [r.row for r in scanned] == [1, 2, 3, 4, 5]
    assert [r.status for r in scanned] == ["succeeded"] * 5
    assert [r.offset for r in scanned] == [header_end, *ends[:-1]]
    assert [r.end for r in scanned] == ends
    assert ends[-1] == os.path.getsize(sink.path) == sink.end
    assert set(scanned[0].fields) == set(FIELDS)


def test_csv_scan_gives_text_values(tmp_path: Path) -> None:
    sink = new_sink(CsvSink, tmp_path)
    sink.append(sink.encode([record(7, note='a,b "q"\nsecond line')]))
    sink.close()

    [scanned] = scan_all(sink)

    assert scanned.fields["note"] == 'a,b "q"\nsecond line'
    assert scanned.fields["row"] == "7"
    assert scanned.fields["error"] == ""
    assert scanned.fields["resent"] == "false"


def test_jsonl_scan_keeps_json_types(tmp_path: Path) -> None:
    sink = new_sink(JsonlSink, tmp_path)
    sink.append(sink.encode([record(7, note={"n": [1, 2.5]}, first="=1+1")]))
    sink.close()

    [scanned] = scan_all(sink)

    assert scanned.fields == dict(
        zip(FIELDS, record(7, note={"n": [1, 2.5]}, first="=1+1"), strict=True)
    )
    assert scanned.fields["first"] == "=1+1"
    assert scanned.fields["resent"] is False
    assert scanned.fields["error"] is None


@pytest.mark.parametrize("kind", TEXT_SINKS)
def test_scan_from_a_record_offset_starts_there(kind: SinkType, tmp_path: Path) -> None:
    sink = new_sink(kind, tmp_path)
    ends = write_records(sink, range(1, 6))

    scanned = list(sink.scan(ends[1]))

    assert [r.row for r in scanned] == [3, 4, 5]
    assert scanned[0].offset == ends[1]


@pytest.mark.parametrize("kind", TEXT_SINKS)
def test_many_records_in_one_append(kind: SinkType, tmp_path: Path) -> None:
    sink = new_sink(kind, tmp_path)

    end = sink.append(sink.encode([record(n) for n in range(1, 101)]))

    assert end == os.path.getsize(sink.path)
    assert [r.row for r in scan_all(sink)] == list(range(1, 101))


def test_csv_header_names_the_fields(tmp_path: Path) -> None:
    sink = new_sink(CsvSink, tmp_path)

    assert Path(sink.path).read_text(encoding="utf-8") == ",".join(FIELDS) + "\n"
    assert sink.read_fields() == FIELDS


def test_jsonl_has_no_header(tmp_path: Path) -> None:
    sink = new_sink(JsonlSink, tmp_path)

    assert sink.end == 0
    assert os.path.getsize(sink.path) == 0


# ------------------------------------------------------------ torn tails


@pytest.mark.parametrize("kind", TEXT_SINKS)
def test_scan_stops_before_a_torn_last_record_at_every_cut(
    kind: SinkType, tmp_path: Path
) -> None:
    sink = new_sink(kind, tmp_path)
    ends = write_records(sink, range(1, 4))
    last = sink.encode([record(4, note='quoted, "text"')])

    for cut in range(1, len(last)):
        os.truncate(sink.path, ends[-1])
        with open(sink.path, "ab") as file:
            file.write(last[:cut])

        scanned = scan_all(sink)

        assert [r.row for r in scanned] == [1, 2, 3], f"cut at {cut}"
        assert scanned[-1].end == ends[-1]


@pytest.mark.parametrize("kind", TEXT_SINKS)
def test_reopen_cuts_the_torn_tail_and_appends_after_it(
    kind: SinkType, tmp_path: Path
) -> None:
    sink = new_sink(kind, tmp_path)
    ends = write_records(sink, range(1, 4))
    torn = sink.encode([record(4)])
    sink.append(torn[: len(torn) // 2])
    sink.close()
    good_end = scan_all(sink)[-1].end

    again = kind(sink.path, FIELDS)
    again.reopen(good_end)
    again.append(again.encode([record(4), record(5)]))
    again.close()

    assert good_end == ends[-1]
    assert [r.row for r in scan_all(again)] == [1, 2, 3, 4, 5]


def test_csv_torn_inside_a_quoted_last_field_is_not_a_record(tmp_path: Path) -> None:
    fields = ("row", "status", "note")
    sink = new_sink(CsvSink, tmp_path, fields)
    good_end = sink.append(sink.encode([[1, "succeeded", "one"]]))
    last = sink.encode([[2, "succeeded", "line one\nline two"]])
    sink.append(last[: last.index(b"\n") + 1])

    scanned = list(sink.scan(len(sink.header())))

    assert [r.row for r in scanned] == [1]
    assert scanned[-1].end == good_end


# ----------------------------------------------------------------- damage


@pytest.mark.parametrize(
    ("kind", "garbage"),
    [
        (CsvSink, b"garbage\n"),
        (CsvSink, b"x,y\n"),
        (JsonlSink, b"{not json}\n"),
        (JsonlSink, b'{"row": "2", "status": "succeeded"}\n'),
        (JsonlSink, b'{"status": "succeeded"}\n'),
        (JsonlSink, b"[2]\n"),
    ],
)
def test_damage_followed_by_records_is_a_checkpoint_error(
    kind: SinkType, garbage: bytes, tmp_path: Path
) -> None:
    sink = new_sink(kind, tmp_path)
    ends = write_records(sink, range(1, 2))
    sink.append(garbage)
    write_records(sink, range(3, 5))

    with pytest.raises(CheckpointError) as caught:
        scan_all(sink)

    assert str(caught.value) == (
        f"{sink.path}: the record at byte {ends[0]} is damaged and more records "
        "follow, so the output cannot be trusted for resume; pass --restart "
        "to start over (the old output is kept)"
    )


def test_csv_bytes_that_are_not_utf8_are_damage(tmp_path: Path) -> None:
    sink = new_sink(CsvSink, tmp_path)
    write_records(sink, range(1, 2))
    sink.append(b"\xff\xfe,\xff\n")
    write_records(sink, range(3, 4))

    with pytest.raises(CheckpointError, match="is damaged and more records follow"):
        scan_all(sink)


# ----------------------------------------------------------------- reopen


def test_csv_reopen_with_other_fields_is_a_checkpoint_error(tmp_path: Path) -> None:
    sink = new_sink(CsvSink, tmp_path)
    sink.close()
    other = CsvSink(sink.path, ("row", "status"))

    with pytest.raises(CheckpointError) as caught:
        other.reopen(sink.end)

    assert str(caught.value) == (
        f"{sink.path}: its columns differ from this run's "
        f"({', '.join(FIELDS)} vs row, status); "
        "run again with the same options or pass --restart"
    )


def test_csv_reopen_of_an_empty_file_is_a_checkpoint_error(tmp_path: Path) -> None:
    path = tmp_path / "out.csv"
    path.write_bytes(b"")

    with pytest.raises(CheckpointError, match=r"\( vs first, note, row"):
        CsvSink(str(path), FIELDS).reopen(0)


def test_csv_reopen_works_with_formula_like_column_names(tmp_path: Path) -> None:
    fields = ("+phone", "@handle", *RESULT_FIELDS)
    sink = new_sink(CsvSink, tmp_path, fields)
    sink.close()

    CsvSink(sink.path, fields).reopen(sink.end)


def test_jsonl_reopen_leaves_field_checks_to_the_checkpoint(tmp_path: Path) -> None:
    # Every JSONL record names its fields; the checkpoint's identity holds the
    # run's field list and refuses a resume with different ones.
    sink = new_sink(JsonlSink, tmp_path)
    end = sink.append(sink.encode([record(1)]))
    sink.close()
    other = JsonlSink(sink.path, ("row", "status"))

    other.reopen(end)

    assert other.end == end
    other.close()


@pytest.mark.parametrize("kind", TEXT_SINKS)
def test_reopen_at_the_end_keeps_everything(kind: SinkType, tmp_path: Path) -> None:
    sink = new_sink(kind, tmp_path)
    ends = write_records(sink, range(1, 4))
    sink.close()

    again = kind(sink.path, FIELDS)
    again.reopen(ends[-1])

    assert again.end == ends[-1] == os.path.getsize(sink.path)
    again.close()
    again.close()  # closing twice is harmless


# -------------------------------------------------------------- full disk


@pytest.mark.parametrize("kind", TEXT_SINKS)
def test_append_on_a_full_disk_leaves_no_torn_bytes(
    kind: SinkType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sink = new_sink(kind, tmp_path)
    ends = write_records(sink, range(1, 3))
    real_write = os.write
    calls: list[int] = []

    def full_disk(fd: int, data: bytes) -> int:
        if fd != sink._fd:
            return real_write(fd, data)
        calls.append(len(data))
        if len(calls) == 1:
            return real_write(fd, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "write", full_disk)
    with pytest.raises(OutputError) as caught:
        sink.append(sink.encode([record(3), record(4)]))
    monkeypatch.undo()

    assert len(calls) == 2
    assert str(caught.value) == (
        f"{sink.path}: cannot write the output (No space left on device); free "
        "space or fix permissions, then run the same command again to resume"
    )
    assert os.path.getsize(sink.path) == ends[-1] == sink.end
    sink.append(sink.encode([record(3)]))
    assert [r.row for r in scan_all(sink)] == [1, 2, 3]


@pytest.mark.parametrize("kind", TEXT_SINKS)
def test_short_writes_are_completed(
    kind: SinkType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sink = new_sink(kind, tmp_path)
    real_write = os.write

    def ten_bytes_at_a_time(fd: int, data: bytes) -> int:
        return real_write(fd, data[:10]) if fd == sink._fd else real_write(fd, data)

    monkeypatch.setattr(os, "write", ten_bytes_at_a_time)
    end = sink.append(sink.encode([record(1), record(2)]))
    monkeypatch.undo()

    assert end == os.path.getsize(sink.path)
    assert [r.row for r in scan_all(sink)] == [1, 2]


@pytest.mark.parametrize("kind", TEXT_SINKS)
def test_sync_is_safe_open_or_closed(kind: SinkType, tmp_path: Path) -> None:
    sink = new_sink(kind, tmp_path)
    write_records(sink, range(1, 3))

    sink.sync()
    sink.close()
    sink.sync()

    assert [r.row for r in scan_all(sink)] == [1, 2]


def test_append_before_open_is_an_output_error(tmp_path: Path) -> None:
    sink = CsvSink(str(tmp_path / "out.csv"), FIELDS)

    with pytest.raises(OutputError, match="the output is not open"):
        sink.append(b"x")
    assert sink.append(b"") == 0


def test_create_in_a_missing_directory_is_an_output_error(tmp_path: Path) -> None:
    path = str(tmp_path / "missing" / "out.csv")

    with pytest.raises(OutputError) as caught:
        CsvSink(path, FIELDS).create()

    assert str(caught.value) == (
        f"{path}: cannot open the output for writing (No such file or directory); "
        "check the directory exists and is writable"
    )


# -------------------------------------------------------- spreadsheet_safe


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("=1+1", "'=1+1"),
        ("+x", "'+x"),
        ("-x", "'-x"),
        ("@x", "'@x"),
        ("\tx", "'\tx"),
        ("\rx", "'\rx"),
        ('=HYPERLINK("http://x")', '\'=HYPERLINK("http://x")'),
        ("-inf", "'-inf"),
        ("+nan", "'+nan"),
        ("-5 ", "'-5 "),
        ("- 5", "'- 5"),
        ("-5", "-5"),
        ("+1.5", "+1.5"),
        ("1e3", "1e3"),
        ("-1.5e-3", "-1.5e-3"),
        ("plain", "plain"),
        (" =x", " =x"),
        ("", ""),
        (5, 5),
        (-5, -5),
        (1.5, 1.5),
        (None, None),
        (True, "true"),
        (False, "false"),
        ({"a": "=x"}, '{"a": "=x"}'),
        (["ü"], '["ü"]'),
    ],
)
def test_spreadsheet_safe(value: Any, expected: Any) -> None:
    assert spreadsheet_safe(value) == expected


def test_csv_cells_are_neutralized_and_jsonl_values_are_raw(tmp_path: Path) -> None:
    risky = ["=1+1", "+x", "-x", "@x", "\tx", "-5", "+1.5", "1e3"]
    csv_sink = new_sink(CsvSink, tmp_path)
    jsonl_sink = new_sink(JsonlSink, tmp_path)

    for sink in (csv_sink, jsonl_sink):
        sink.append(sink.encode([record(n, first=v) for n, v in enumerate(risky, 1)]))

    from_csv = [r.fields["first"] for r in scan_all(csv_sink)]
    from_jsonl = [r.fields["first"] for r in scan_all(jsonl_sink)]
    assert from_csv == ["'=1+1", "'+x", "'-x", "'@x", "'\tx", "-5", "+1.5", "1e3"]
    assert from_jsonl == risky


def test_csv_cell_starting_with_a_carriage_return_is_neutralized(
    tmp_path: Path,
) -> None:
    sink = CsvSink(str(tmp_path / "out.csv"), ("row", "status", "note"))

    encoded = sink.encode([[1, "succeeded", "\rx"]])

    assert encoded.startswith(b"1,succeeded,")
    assert b"'\rx" in encoded


@pytest.mark.parametrize("value", ["\rx", "a\rb", "ends\r"])
def test_csv_value_with_a_carriage_return_scans_back(
    value: str, tmp_path: Path
) -> None:
    sink = new_sink(CsvSink, tmp_path)
    sink.append(sink.encode([record(1, note=value), record(2)]))

    scanned = scan_all(sink)

    assert [r.row for r in scanned] == [1, 2]
    assert scanned[0].fields["note"] == spreadsheet_safe(value)


# --------------------------------------------------------------- open_sink


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("out.csv", CsvSink),
        ("out.CSV", CsvSink),
        ("out.jsonl", JsonlSink),
        ("out.ndjson", JsonlSink),
        ("out.parquet", ParquetSink),
        ("out.xlsx", ExcelSink),
    ],
)
def test_open_sink_picks_the_writer_by_extension(name: str, kind: type) -> None:
    sink = open_sink(name, FIELDS)

    assert type(sink) is kind
    assert sink.fields == FIELDS


@pytest.mark.parametrize(
    ("name", "shown"), [("out.txt", "'.txt'"), ("out", "'(none)'")]
)
def test_open_sink_rejects_other_extensions(name: str, shown: str) -> None:
    with pytest.raises(UsageError) as caught:
        open_sink(name, FIELDS)

    assert str(caught.value) == (
        f"output {name!r}: unknown extension {shown}; "
        "name it .csv, .jsonl, .parquet or .xlsx"
    )


# ---------------------------------------------------------- final formats


def journal_sink(kind: SinkType, tmp_path: Path, suffix: str) -> Any:
    sink = kind(str(tmp_path / f"out{suffix}"), FIELDS)
    sink.create()
    sink.append(
        sink.encode(
            [
                record(1, first="=1+1", note={"k": [1]}),
                record(2, status="failed", http_status=None, error="-x", resent=True),
                record(3, first="-5", note=42),
            ]
        )
    )
    return sink


def test_parquet_finish_types_result_columns(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = journal_sink(ParquetSink, tmp_path, ".parquet")
    sink.finish()
    sink.close()

    table = pq.read_table(sink.final_path)

    assert sink.path == sink.final_path + ".journal.jsonl"
    assert table.column_names == list(FIELDS)
    for name in ("row", "http_status", "attempts", "latency_ms"):
        assert table.schema.field(name).type == pa.int64()
    assert table.schema.field("resent").type == pa.bool_()
    assert table.schema.field("first").type == pa.string()
    assert table.column("row").to_pylist() == [1, 2, 3]
    assert table.column("http_status").to_pylist() == [200, None, 200]
    assert table.column("resent").to_pylist() == [False, True, False]
    assert table.column("first").to_pylist() == ["=1+1", "name 2", "-5"]
    assert table.column("note").to_pylist() == ['{"k": [1]}', "plain", "42"]
    assert table.column("error").to_pylist() == [None, "-x", None]
    assert not os.path.exists(sink.final_path + ".tmp")


def test_parquet_finish_again_rewrites_with_new_records(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    sink = journal_sink(ParquetSink, tmp_path, ".parquet")
    sink.finish()
    sink.append(sink.encode([record(4)]))
    sink.finish()
    sink.close()

    assert pq.read_table(sink.final_path).column("row").to_pylist() == [1, 2, 3, 4]


def test_parquet_finish_writes_the_journal_in_chunks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pyarrow.parquet as pq

    from batchrun.sinks import columnar

    monkeypatch.setattr(columnar, "CHUNK", 2)
    sink = ParquetSink(str(tmp_path / "out.parquet"), FIELDS)
    sink.create()
    sink.append(sink.encode([record(n) for n in range(1, 6)]))
    sink.finish()
    sink.close()

    parquet = pq.ParquetFile(sink.final_path)
    assert parquet.num_row_groups == 3
    assert parquet.read().column("row").to_pylist() == [1, 2, 3, 4, 5]


def test_parquet_finish_of_an_empty_journal_has_the_schema(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    sink = ParquetSink(str(tmp_path / "out.parquet"), FIELDS)
    sink.create()
    sink.finish()
    sink.close()

    table = pq.read_table(sink.final_path)
    assert table.num_rows == 0
    assert table.column_names == list(FIELDS)


def test_xlsx_finish_is_readable_with_neutralized_cells(tmp_path: Path) -> None:
    from openpyxl import load_workbook

    sink = journal_sink(ExcelSink, tmp_path, ".xlsx")
    sink.finish()
    sink.close()

    workbook = load_workbook(sink.final_path, read_only=True)
    rows = list(workbook["results"].iter_rows(values_only=True))
    workbook.close()
    header, first, second, third = rows
    cell = dict(zip(header, first, strict=True))
    assert header == FIELDS
    assert cell["first"] == "'=1+1"
    assert cell["note"] == '{"k": [1]}'
    assert cell["row"] == 1 and cell["latency_ms"] == 121
    assert cell["resent"] is False
    assert dict(zip(header, second, strict=True))["error"] == "'-x"
    assert dict(zip(header, second, strict=True))["http_status"] is None
    assert dict(zip(header, third, strict=True))["first"] == "-5"
    assert dict(zip(header, third, strict=True))["note"] == "42"
    assert not os.path.exists(sink.final_path + ".tmp.xlsx")


def test_xlsx_finish_survives_control_characters_in_values(tmp_path: Path) -> None:
    from openpyxl import load_workbook

    sink = ExcelSink(str(tmp_path / "out.xlsx"), FIELDS)
    sink.create()
    sink.append(sink.encode([record(1, note="bell\x07 and \x1b[31m")]))
    sink.finish()
    sink.close()

    workbook = load_workbook(sink.final_path, read_only=True)
    assert len(list(workbook["results"].iter_rows())) == 2
    workbook.close()
