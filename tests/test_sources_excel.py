"""Excel input: typed cells made JSON-safe, header rules, sheets, sheet rows."""

from __future__ import annotations

import datetime as dt
import re
import zipfile
from pathlib import Path
from typing import Any

import openpyxl
import pytest
from openpyxl.utils.datetime import CALENDAR_MAC_1904

from batchrun.errors import InputError
from batchrun.rows import Row
from batchrun.sources import Position, SourceOptions, open_source
from batchrun.sources.excel import column_letter, shows_time


def save(tmp_path: Path, rows: list[list[Any]], name: str = "t.xlsx") -> str:
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.title = "contacts"
    for row in rows:
        sheet.append(row)
    path = str(tmp_path / name)
    book.save(path)
    return path


def read(path: str, start: Position | None = None, **options: Any) -> list[Row]:
    with open_source(path, SourceOptions(**options)) as source:
        return [row for batch in source.batches(start) for row in batch]


def test_excel_cells_keep_their_types(tmp_path: Path) -> None:
    path = save(
        tmp_path,
        [
            ["zip", "n", "big", "whole", "huge", "f", "flag", "empty", "last"],
            ["02134", 42, 123456789012345, 5.0, 1e20, 2.5, True, None, "x"],
            ["", -7, 0, -3.0, 0.1, 1e-7, False, " ", None],
        ],
    )

    rows = read(path)

    assert [row.values for row in rows] == [
        {
            "zip": "02134",
            "n": 42,
            "big": 123456789012345,
            "whole": 5,
            "huge": 100000000000000000000,
            "f": 2.5,
            "flag": True,
            "empty": "",
            "last": "x",
        },
        {
            "zip": "",
            "n": -7,
            "big": 0,
            "whole": -3,
            "huge": 0.1,
            "f": 1e-7,
            "flag": False,
            "empty": " ",
            "last": "",
        },
    ]
    assert isinstance(rows[0].values and rows[0].values["whole"], int)
    assert isinstance(rows[1].values and rows[1].values["flag"], bool)


def test_excel_dates_and_times_become_iso_text(tmp_path: Path) -> None:
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(["when", "day", "midnight", "time", "duration"])
    sheet.append(
        [
            dt.datetime(2024, 1, 2, 3, 4, 5),
            dt.datetime(2024, 1, 2),
            dt.datetime(2024, 1, 2),
            dt.time(3, 4, 5),
            dt.timedelta(hours=26, minutes=30),
        ]
    )
    sheet["B2"].number_format = "yyyy-mm-dd"
    sheet["C2"].number_format = "yyyy-mm-dd hh:mm"
    path = str(tmp_path / "t.xlsx")
    book.save(path)

    rows = read(path)

    assert rows[0].values == {
        "when": "2024-01-02T03:04:05",
        "day": "2024-01-02",
        "midnight": "2024-01-02T00:00:00",
        "time": "03:04:05",
        "duration": "26:30:00",
    }


def test_excel_1904_workbook_dates(tmp_path: Path) -> None:
    book = openpyxl.Workbook()
    book.epoch = CALENDAR_MAC_1904
    sheet = book.active
    sheet.append(["day", "when"])
    sheet.append([dt.datetime(2024, 1, 2), dt.datetime(2024, 1, 2, 12, 30)])
    sheet["A2"].number_format = "d/m/yyyy"
    path = str(tmp_path / "t.xlsx")
    book.save(path)
    with zipfile.ZipFile(path) as archive:
        xml = archive.read("xl/worksheets/sheet1.xml").decode()
    # 2024-01-02 is serial 43831 from 1904 (45293 from 1900).
    assert re.search(r'<c r="A2"[^>]*><v>43831</v>', xml)

    rows = read(path)

    assert rows[0].values == {"day": "2024-01-02", "when": "2024-01-02T12:30:00"}


def test_excel_header_is_first_non_empty_row(tmp_path: Path) -> None:
    path = save(tmp_path, [[], [None, None], ["id", "name"], [], [1, "Ann"], [2]])

    with open_source(path) as source:
        columns = source.columns
        rows = [row for batch in source.batches() for row in batch]

    assert columns == ["id", "name"]
    assert [(row.number, row.line, row.values) for row in rows] == [
        (1, 5, {"id": 1, "name": "Ann"}),
        (2, 6, {"id": 2, "name": ""}),
    ]
    assert rows[0].offset is None


def test_excel_empty_rows_are_skipped_and_not_counted(tmp_path: Path) -> None:
    path = save(tmp_path, [["id"], [1], [None], [""], ["  "], [2]])

    rows = read(path)

    assert [(row.number, row.line, row.values) for row in rows] == [
        (1, 2, {"id": 1}),
        (2, 6, {"id": 2}),
    ]


def test_excel_numeric_header_names_become_text(tmp_path: Path) -> None:
    path = save(tmp_path, [["id", 2024, 1.5], [1, 2, 3]])

    with open_source(path) as source:
        assert source.columns == ["id", "2024", "1.5"]


def test_excel_trailing_formatted_rows_are_skipped(tmp_path: Path) -> None:
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(["id"])
    sheet.append([1])
    sheet.cell(row=500_000, column=3).style = "Good"
    path = str(tmp_path / "t.xlsx")
    book.save(path)

    rows = read(path)

    assert [(row.number, row.line) for row in rows] == [(1, 2)]


def test_excel_wrong_recorded_size_does_not_hide_rows(tmp_path: Path) -> None:
    path = save(tmp_path, [["id", "name"], [1, "a"], [2, "b"], [3, "c"]])
    with zipfile.ZipFile(path) as archive:
        parts = {name: archive.read(name) for name in archive.namelist()}
    sheet_xml = parts["xl/worksheets/sheet1.xml"].decode()
    parts["xl/worksheets/sheet1.xml"] = re.sub(
        r'<dimension ref="[^"]*"', '<dimension ref="A1:A1"', sheet_xml
    ).encode()
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in parts.items():
            archive.writestr(name, data)

    rows = read(path)

    assert [row.values for row in rows] == [
        {"id": 1, "name": "a"},
        {"id": 2, "name": "b"},
        {"id": 3, "name": "c"},
    ]


def test_excel_extra_cells_beyond_header(tmp_path: Path) -> None:
    path = save(
        tmp_path,
        [["id", "name", None], [1, "a", None, ""], [2, "b", None, None, "oops"]],
    )

    rows = read(path)

    assert rows[0].values == {"id": 1, "name": "a"}
    assert rows[1].values is None
    assert rows[1].error == (
        "sheet contacts, row 3: cell E3 holds a value but the header names only 2 "
        "columns; name the column or clear the cell"
    )


def test_excel_error_cell_is_an_invalid_row(tmp_path: Path) -> None:
    path = save(tmp_path, [["id", "total"], [1, "#DIV/0!"], [2, 5]])

    rows = read(path)

    assert rows[0].values is None
    assert rows[0].error == (
        "sheet contacts, row 2: cell B2 holds the error #DIV/0!; fix the formula "
        "or clear the cell"
    )
    assert rows[1].values == {"id": 2, "total": 5}


def test_excel_sheet_is_chosen_by_name(tmp_path: Path) -> None:
    book = openpyxl.Workbook()
    book.active.title = "first"
    book.active.append(["a"])
    second = book.create_sheet("Second sheet")
    second.append(["b"])
    second.append(["yes"])
    path = str(tmp_path / "t.xlsx")
    book.save(path)

    rows = read(path, sheet="Second sheet")

    assert [row.values for row in rows] == [{"b": "yes"}]


def test_excel_unknown_sheet_lists_the_names(tmp_path: Path) -> None:
    path = save(tmp_path, [["id"]])

    with pytest.raises(InputError) as caught:
        read(path, sheet="Sheet9")

    assert str(caught.value) == (
        f"{path}: no sheet named 'Sheet9'; pass --sheet with one of: 'contacts'"
    )


def test_excel_duplicate_header_names_raise(tmp_path: Path) -> None:
    path = save(tmp_path, [[], ["id", "email", "id", "email", "id"]])

    with pytest.raises(InputError) as caught:
        read(path)

    assert str(caught.value) == (
        f"{path}, sheet contacts, row 2: the header repeats column names: 'id' "
        "(columns A, C, E); 'email' (columns B, D); rename them so every column "
        "is unique"
    )


def test_excel_empty_header_cell_raises(tmp_path: Path) -> None:
    path = save(tmp_path, [["id", None, "name", " ", "x", None]])

    with pytest.raises(InputError) as caught:
        read(path)

    assert str(caught.value) == (
        f"{path}, sheet contacts, row 1: header cell(s) in column(s) B, D are empty; "
        "give every column a name in the header row"
    )


def test_excel_empty_sheet_raises(tmp_path: Path) -> None:
    path = save(tmp_path, [])

    with pytest.raises(InputError) as caught:
        read(path)

    assert str(caught.value) == (
        f"{path}: sheet contacts is empty; its first row must be a header row "
        "naming the columns"
    )


@pytest.mark.parametrize("fmt", ["xls", "ods"])
def test_excel_old_formats_raise(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"t.{fmt}"
    path.write_bytes(b"\xd0\xcf\x11\xe0")

    with pytest.raises(InputError) as caught:
        read(str(path))

    assert str(caught.value) == (
        f"{path}: .{fmt} workbooks cannot be read; open the file in Excel or "
        "LibreOffice and save it as .xlsx (or export the sheet as CSV)"
    )


def test_excel_not_a_workbook_raises(tmp_path: Path) -> None:
    path = tmp_path / "t.xlsx"
    path.write_text("id,name\n")

    with pytest.raises(InputError) as caught:
        read(str(path))

    assert str(caught.value) == (
        f"{path}: not a readable .xlsx workbook (File is not a zip file); check "
        "the file, or pass --format if it holds another format"
    )


def test_excel_format_option_reads_any_file_name(tmp_path: Path) -> None:
    path = save(tmp_path, [["id"], [1]], name="export.bin")

    rows = read(path, format="xlsx")

    assert [row.values for row in rows] == [{"id": 1}]


def test_excel_batches_hold_at_most_batch_size_rows(tmp_path: Path) -> None:
    path = save(tmp_path, [["n"], *[[n] for n in range(5)]])

    with open_source(path, SourceOptions(batch_size=2)) as source:
        sizes = [len(batch) for batch in source.batches()]

    assert sizes == [2, 2, 1]


@pytest.mark.parametrize(
    "start", [Position(2, 4), Position(2)], ids=["by-sheet-row", "by-count"]
)
def test_excel_resume_continues_after_start(tmp_path: Path, start: Position) -> None:
    path = save(tmp_path, [["n"], ["a"], [], ["b"], ["c"], [], ["d"]])

    rows = read(path, start)

    assert [(row.number, row.line, row.values) for row in rows] == [
        (3, 5, {"n": "c"}),
        (4, 7, {"n": "d"}),
    ]


def test_excel_batches_can_be_read_twice(tmp_path: Path) -> None:
    path = save(tmp_path, [["n"], [1], [2]])

    with open_source(path) as source:
        first = [row.values for batch in source.batches() for row in batch]
        second = [row.values for batch in source.batches() for row in batch]

    assert first == second == [{"n": 1}, {"n": 2}]


@pytest.mark.parametrize(
    ("number_format", "expected"),
    [
        ("yyyy-mm-dd", False),
        ("d-mmm-yy", False),
        ('dd"h"mm', False),
        ("[$-409]mmmm d, yyyy", False),
        ("yyyy-mm-dd h:mm", True),
        ("mm:ss", True),
        (None, True),
    ],
)
def test_shows_time(number_format: str | None, expected: bool) -> None:
    assert shows_time(number_format) is expected


def test_column_letter() -> None:
    assert [column_letter(n) for n in (1, 26, 27, 52, 703)] == [
        "A",
        "Z",
        "AA",
        "AZ",
        "AAA",
    ]
