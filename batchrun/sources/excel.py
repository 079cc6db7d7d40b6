"""Excel input (.xlsx, .xlsm), read row by row with openpyxl's read-only mode.

The header is the sheet's first non-empty row. Cells keep their types as
far as JSON allows: text stays text ("02134"), booleans stay booleans,
whole numbers become integers (never "5.0" or "1E+20"), dates and times
become ISO 8601 text and empty cells become "" as in a CSV file. Empty rows
are skipped and not counted. A row's ``line`` is its row number in the sheet.
Formulas give the value Excel last calculated; a workbook never opened in
Excel after a formula was written (one made by a script) has no such value
and the cell reads as empty.

.xls and .ods workbooks are not read: saving them as .xlsx is the fix.
"""

from __future__ import annotations

import datetime as dt
import re
import zipfile
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, BinaryIO

from ..errors import InputError
from ..rows import Row
from . import textio
from .base import Position, Source
from .values import duration_text, json_safe

if TYPE_CHECKING:
    from . import SourceOptions

# Quoted text, [colour] or [$-locale] sections and escaped characters in a
# number format; what is left says whether the format shows a time.
FORMAT_LITERALS = re.compile(r'"[^"]*"|\[[^\]]*\]|\\.')
MIDNIGHT = dt.time()


def shows_time(number_format: str | None) -> bool:
    """True if an Excel number format displays hours or seconds."""
    if not number_format:
        return True
    plain = FORMAT_LITERALS.sub("", number_format).lower()
    return "h" in plain or "s" in plain


def cell_value(value: Any) -> Any:
    """The JSON-safe value of a cell holding ``value``; "" for an empty cell."""
    if value is None:
        return ""
    if isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        if value.is_integer():
            return int(value)
        return json_safe(value)
    if isinstance(value, dt.timedelta):
        return duration_text(value)
    return json_safe(value)


def read_cell(cell: Any) -> Any:
    """The value of an openpyxl cell; a midnight datetime shown as a date is a date."""
    value = cell.value
    if isinstance(value, dt.datetime) and value.time() == MIDNIGHT:
        if not shows_time(cell.number_format):
            return value.date().isoformat()
    return cell_value(value)


def is_empty(value: Any) -> bool:
    """True for a cell a person sees as empty (nothing, or only spaces)."""
    return value is None or (isinstance(value, str) and not value.strip())


def column_letter(index: int) -> str:
    """The letters of the 1-based column ``index`` ("A", "Z", "AA", ...)."""
    letters = ""
    while index > 0:
        index, rest = divmod(index - 1, 26)
        letters = chr(ord("A") + rest) + letters
    return letters


class ExcelSource(Source):
    """Reads one sheet of an .xlsx workbook, streaming its rows."""

    def __init__(self, path: str, fmt: str, options: SourceOptions) -> None:
        super().__init__(path, fmt, options)
        if fmt in ("xls", "ods"):
            raise InputError(
                f"{path}: .{fmt} workbooks cannot be read; open the file in Excel "
                "or LibreOffice and save it as .xlsx (or export the sheet as CSV)"
            )
        if path == "-" or textio.suffix_compression(path):
            raise InputError(
                f"{path}: a workbook is read from an uncompressed .xlsx file, not "
                "from standard input or a compressed file; save or decompress it"
            )
        self._handle: BinaryIO | None = None
        self._book = self._load()
        try:
            self._sheet = self._pick_sheet()
            # The size a workbook records for a sheet can be wrong either way:
            # too small hides rows, too large pads with a million empty ones.
            self._sheet.reset_dimensions()
            self._columns, self._header_row = self._read_header()
        except BaseException:
            self.close()
            raise

    @property
    def columns(self) -> list[str]:
        """The header row's column names, in sheet order."""
        return list(self._columns)

    def close(self) -> None:
        if self._handle is not None:
            self._book.close()
            self._handle.close()
            self._handle = None

    def batches(self, start: Position | None = None) -> Iterator[list[Row]]:
        """Yield row batches; with ``start``, reading begins after its sheet row."""
        number, skip, first = 0, 0, self._header_row + 1
        if start is not None and start.row > 0:
            if start.line > self._header_row:
                number, first = start.row, start.line + 1
            else:
                skip = start.row
        batch: list[Row] = []
        for line, cells in enumerate(self._sheet.iter_rows(min_row=first), first):
            if not cells or all(is_empty(cell.value) for cell in cells):
                continue
            number += 1
            if number <= skip:
                continue
            batch.append(self._row(number, line, cells))
            if len(batch) >= self.batch_size:
                yield batch
                batch = []
        if batch:
            yield batch

    def _load(self) -> Any:
        import openpyxl

        # A file object rather than the path: openpyxl refuses names that do
        # not end in .xlsx, and --format xlsx should work whatever the name.
        try:
            self._handle = open(self.path, "rb")
        except OSError as exc:
            raise InputError(
                f"{self.path}: cannot be opened ({exc.strerror}); check the path "
                "and permissions"
            ) from None
        try:
            return openpyxl.load_workbook(self._handle, read_only=True, data_only=True)
        except (zipfile.BadZipFile, KeyError, ValueError, OSError) as exc:
            self._handle.close()
            self._handle = None
            raise InputError(
                f"{self.path}: not a readable .xlsx workbook ({exc}); check the "
                "file, or pass --format if it holds another format"
            ) from None

    def _pick_sheet(self) -> Any:
        book = self._book
        name = self.options.sheet
        if name is None:
            if not book.worksheets:
                raise InputError(f"{self.path}: the workbook has no worksheet")
            return book.worksheets[0]
        worksheets = {sheet.title: sheet for sheet in book.worksheets}
        if name not in worksheets:
            known = ", ".join(repr(title) for title in worksheets)
            raise InputError(
                f"{self.path}: no sheet named {name!r}; pass --sheet with one of: "
                f"{known}"
            )
        return worksheets[name]

    def _where(self, line: int) -> str:
        return f"sheet {self._sheet.title}, row {line}"

    def _read_header(self) -> tuple[list[str], int]:
        for line, cells in enumerate(self._sheet.iter_rows(), 1):
            values = [read_cell(cell) for cell in cells]
            named = [index for index, value in enumerate(values) if not is_empty(value)]
            if named:
                names = [str(value) for value in values[: named[-1] + 1]]
                self._check_header(names, line)
                return names, line
        raise InputError(
            f"{self.path}: sheet {self._sheet.title} is empty; its first row must "
            "be a header row naming the columns"
        )

    def _check_header(self, names: list[str], line: int) -> None:
        where = f"{self.path}, {self._where(line)}"
        unnamed = [
            column_letter(index)
            for index, name in enumerate(names, 1)
            if not name.strip()
        ]
        if unnamed:
            raise InputError(
                f"{where}: header cell(s) in column(s) {', '.join(unnamed)} are "
                "empty; give every column a name in the header row"
            )
        seen: dict[str, list[str]] = {}
        for index, name in enumerate(names, 1):
            seen.setdefault(name, []).append(column_letter(index))
        repeated = [
            f"{name!r} (columns {', '.join(letters)})"
            for name, letters in seen.items()
            if len(letters) > 1
        ]
        if repeated:
            raise InputError(
                f"{where}: the header repeats column names: {'; '.join(repeated)}; "
                "rename them so every column is unique"
            )

    def _row(self, number: int, line: int, cells: Sequence[Any]) -> Row:
        width = len(self._columns)
        for index, cell in enumerate(cells):
            if cell.data_type == "e":
                return self._invalid(
                    number,
                    line,
                    f"cell {column_letter(index + 1)}{line} holds the error "
                    f"{cell.value}; fix the formula or clear the cell",
                )
            if index >= width and not is_empty(cell.value):
                return self._invalid(
                    number,
                    line,
                    f"cell {column_letter(index + 1)}{line} holds a value but the "
                    f"header names only {width} columns; name the column or clear "
                    "the cell",
                )
        values = {
            name: read_cell(cell)
            for name, cell in zip(self._columns, cells, strict=False)
        }
        for name in self._columns[len(cells) :]:
            values[name] = ""
        return Row(number, line, values)

    def _invalid(self, number: int, line: int, problem: str) -> Row:
        return Row(number, line, None, f"{self._where(line)}: {problem}")
