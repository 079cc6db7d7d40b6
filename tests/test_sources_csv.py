"""CSV and TSV input: exact text, header checks, encodings, offsets, resume."""

from __future__ import annotations

import bz2
import gzip
import io
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from batchrun.errors import InputError
from batchrun.rows import Row
from batchrun.sources import Position, SourceOptions, open_source, textio
from batchrun.sources.csv import CsvSource, detect_delimiter


def write(tmp_path: Path, name: str, data: bytes | str) -> str:
    path = tmp_path / name
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return str(path)


def read(
    path: str, start: Position | None = None, **options: object
) -> tuple[list[str], list[Row]]:
    with open_source(path, SourceOptions(**options)) as source:  # type: ignore[arg-type]
        rows = [row for batch in source.batches(start) for row in batch]
        return source.columns or [], rows


def values(rows: list[Row]) -> list[dict[str, object] | None]:
    return [row.values for row in rows]


def test_csv_cells_stay_exact_text(tmp_path: Path) -> None:
    cells = ["00123", "+15550100", "1e5", "NA", "None", "null", "nan"]
    big = "1234567890123456789"
    path = write(
        tmp_path, "t.csv", f"{','.join('abcdefgh')},i\n{','.join(cells)},{big},\n"
    )

    columns, rows = read(path)

    assert columns == list("abcdefghi")
    assert rows[0].values == dict(zip("abcdefghi", [*cells, big, ""], strict=True))


def test_csv_bom_is_stripped_from_first_column(tmp_path: Path) -> None:
    path = write(tmp_path, "t.csv", b"\xef\xbb\xbfid,name\n1,Ann\n")

    columns, rows = read(path)

    assert columns == ["id", "name"]
    assert rows[0].values == {"id": "1", "name": "Ann"}


def test_csv_crlf_leaves_no_carriage_return(tmp_path: Path) -> None:
    path = write(tmp_path, "t.csv", "id,name\r\n1,Ann\r\n2,Bob\r\n")

    columns, rows = read(path)

    assert columns == ["id", "name"]
    assert values(rows) == [{"id": "1", "name": "Ann"}, {"id": "2", "name": "Bob"}]


def test_csv_quoted_fields_are_one_value(tmp_path: Path) -> None:
    text = 'id,note\n1,"a, b"\n2,"say ""hi"""\n3,"two\nlines"\n4,end\n'
    path = write(tmp_path, "t.csv", text)

    _, rows = read(path)

    assert values(rows) == [
        {"id": "1", "note": "a, b"},
        {"id": "2", "note": 'say "hi"'},
        {"id": "3", "note": "two\nlines"},
        {"id": "4", "note": "end"},
    ]
    assert [row.line for row in rows] == [2, 3, 4, 6]
    assert [row.number for row in rows] == [1, 2, 3, 4]


def test_csv_empty_file_raises(tmp_path: Path) -> None:
    path = write(tmp_path, "t.csv", "")

    with pytest.raises(InputError) as caught:
        read(path)

    assert str(caught.value) == (
        f"{path}: the file is empty; its first line must be a header row naming "
        "the columns"
    )


def test_csv_blank_only_file_raises(tmp_path: Path) -> None:
    path = write(tmp_path, "t.csv", "\n  \n\r\n")

    with pytest.raises(InputError, match="the file is empty"):
        read(path)


def test_csv_duplicate_column_names_raise(tmp_path: Path) -> None:
    path = write(tmp_path, "t.csv", "email,name,email,id,id\n1,2,3,4,5\n")

    with pytest.raises(InputError) as caught:
        read(path)

    assert str(caught.value) == (
        f"{path}, line 1: the header repeats column names: 'email' (columns 1, 3); "
        "'id' (columns 4, 5); rename them so every column is unique"
    )


def test_csv_empty_column_name_raises(tmp_path: Path) -> None:
    path = write(tmp_path, "t.csv", "\nid,,name,\n1,2,3,4\n")

    with pytest.raises(InputError) as caught:
        read(path)

    assert str(caught.value) == (
        f"{path}, line 2: header column(s) 2, 4 have no name; give every column "
        "a name in the header row"
    )


def test_csv_blank_column_name_raises(tmp_path: Path) -> None:
    path = write(tmp_path, "t.csv", "id, \n1,2\n")

    with pytest.raises(InputError, match=r"line 1: header column\(s\) 2 have no"):
        read(path)


def test_csv_not_utf8_raises_with_line_and_offset(tmp_path: Path) -> None:
    path = write(tmp_path, "t.csv", b"id,name\n1,Ann\n2,caf\xe9\n")

    with pytest.raises(InputError) as caught:
        read(path)

    assert str(caught.value) == (
        f"{path}, line 3: byte 0xe9 at byte offset 19 is not valid UTF-8; pass the "
        "file's encoding, for example --encoding cp1252"
    )


def test_csv_utf16_without_encoding_suggests_it(tmp_path: Path) -> None:
    path = write(tmp_path, "t.csv", "id,name\n1,Ann\n".encode("utf-16"))

    with pytest.raises(InputError, match="pass --encoding utf-16$"):
        read(path)


@pytest.mark.parametrize("encoding", ["cp1252", "latin-1"])
def test_csv_given_encoding_decodes(tmp_path: Path, encoding: str) -> None:
    path = write(tmp_path, "t.csv", "id,name\n1,café\n".encode(encoding))

    _, rows = read(path, encoding=encoding)

    assert rows[0].values == {"id": "1", "name": "café"}
    assert rows[0].offset == 15


def test_csv_utf16_encoding_reads_without_offsets(tmp_path: Path) -> None:
    path = write(tmp_path, "t.csv", "id,name\r\n1,Zoë\r\n2,Åsa\r\n".encode("utf-16"))

    columns, rows = read(path, encoding="utf-16")

    assert columns == ["id", "name"]
    assert values(rows) == [{"id": "1", "name": "Zoë"}, {"id": "2", "name": "Åsa"}]
    assert [row.offset for row in rows] == [None, None]


def test_csv_unknown_encoding_raises(tmp_path: Path) -> None:
    path = write(tmp_path, "t.csv", "id\n1\n")

    with pytest.raises(InputError) as caught:
        read(path, encoding="klingon")

    assert str(caught.value) == (
        "--encoding 'klingon' is not an encoding Python knows; try utf-8, cp1252 "
        "or latin-1"
    )


@pytest.mark.parametrize(
    ("text", "delimiter"),
    [
        ("a;b;c\n1;2,5;3\n4;5,0;6\n", ";"),
        ("a|b\n1|x, y\n", "|"),
        ("a\tb\n1\tx;y\n", "\t"),
        ('a,b\n1,"x;y;z"\n2,w\n', ","),
        ("single\nvalue\n", ","),
        ('name;note\n"A, B";x\n', ";"),
    ],
)
def test_csv_delimiter_is_detected(tmp_path: Path, text: str, delimiter: str) -> None:
    path = write(tmp_path, "t.csv", text)

    with CsvSource(path, "csv", SourceOptions()) as source:
        assert source.delimiter == delimiter


def test_csv_given_delimiter_wins(tmp_path: Path) -> None:
    path = write(tmp_path, "t.csv", "a;b,c\n1;2,3\n")

    columns, rows = read(path, delimiter=";")

    assert columns == ["a", "b,c"]
    assert rows[0].values == {"a": "1", "b,c": "2,3"}


def test_tsv_uses_tab(tmp_path: Path) -> None:
    path = write(tmp_path, "t.tsv", "a,b\tc\n1,2\t3\n")

    columns, rows = read(path)

    assert columns == ["a,b", "c"]
    assert rows[0].values == {"a,b": "1,2", "c": "3"}


def test_detect_delimiter_ignores_a_cut_last_line() -> None:
    lines = ["a;b\n", "1;2\n", "3;4\n", '5;"cut, in, the, middle\n']

    assert detect_delimiter(lines, truncated=True) == ";"


def test_csv_wrong_field_count_is_an_invalid_row(tmp_path: Path) -> None:
    path = write(tmp_path, "t.csv", "a,b,c,d\n1,2,3,4\n1,2,3\n1,2,3,4,5\n5,6,7,8\n")

    _, rows = read(path)

    assert [(row.number, row.line, row.error) for row in rows] == [
        (1, 2, None),
        (2, 3, "line 3: 3 fields, expected 4 (header has 4 columns)"),
        (3, 4, "line 4: 5 fields, expected 4 (header has 4 columns)"),
        (4, 5, None),
    ]
    assert rows[1].values is None
    assert rows[3].values == {"a": "5", "b": "6", "c": "7", "d": "8"}


def test_csv_blank_lines_are_skipped_and_not_counted(tmp_path: Path) -> None:
    path = write(tmp_path, "t.csv", "\na,b\n\n1,2\n   \n\t\n,\n3,4\n\n")

    _, rows = read(path)

    assert [(row.number, row.line) for row in rows] == [(1, 4), (2, 8)]
    assert values(rows) == [{"a": "1", "b": "2"}, {"a": "3", "b": "4"}]


def test_csv_offsets_point_just_past_each_row(tmp_path: Path) -> None:
    data = b'id,note\r\n1,"x\r\ny"\r\n\r\n2,z\r\n3,last'
    path = write(tmp_path, "t.csv", data)

    _, rows = read(path)

    assert [row.offset for row in rows] == [
        data.index(b"\r\n\r\n") + 2,
        data.index(b"3,last"),
        len(data),
    ]


def test_csv_offsets_survive_small_chunks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(textio, "CHUNK_BYTES", 16)
    lines = [f'{n},"text {n}\nsecond, line"\n' for n in range(1, 41)]
    data = ("id,note\n" + "".join(lines)).encode()
    path = write(tmp_path, "t.csv", data)

    _, rows = read(path, batch_size=7)

    assert len(rows) == 40
    assert rows[39].values == {"id": "40", "note": "text 40\nsecond, line"}
    assert [row.line for row in rows[:3]] == [2, 4, 6]
    ends = [len("id,note\n") + len("".join(lines[: n + 1])) for n in range(40)]
    assert [row.offset for row in rows] == ends


def test_csv_batches_hold_at_most_batch_size_rows(tmp_path: Path) -> None:
    path = write(tmp_path, "t.csv", "a\n" + "".join(f"{n}\n" for n in range(5)))

    with open_source(path, SourceOptions(batch_size=2)) as source:
        sizes = [len(batch) for batch in source.batches()]

    assert sizes == [2, 2, 1]


def test_csv_resume_seeks_to_offset(tmp_path: Path) -> None:
    data = 'id,note\n1,a\n2,"b\nb"\n\n3,c\n4,d\n5,e\n'
    path = write(tmp_path, "t.csv", data)
    _, full = read(path)
    done = full[1]

    _, rest = read(path, Position(done.number, done.line + 1, done.offset))

    assert [(row.number, row.line, row.values) for row in rest] == [
        (row.number, row.line, row.values) for row in full[2:]
    ]
    assert [row.offset for row in rest] == [row.offset for row in full[2:]]


def test_csv_resume_seek_does_not_reread_earlier_rows(tmp_path: Path) -> None:
    path = write(tmp_path, "t.csv", "id\n1\n2\n3\n")
    _, full = read(path)
    # Damage the first rows: a seeking resume must not read them again.
    Path(path).write_bytes(b"id\n,,,\n,,,\n3\n")

    _, rest = read(path, Position(2, 3, full[1].offset))

    assert values(rest) == [{"id": "3"}]
    assert rest[0].number == 3


def test_csv_resume_with_bad_offset_skips_rows(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write(tmp_path, "t.csv", "id\n1\n2\n3\n")

    _, rest = read(path, Position(2, 3, 4))

    assert [(row.number, row.values) for row in rest] == [(3, {"id": "3"})]
    assert "byte offset 4 is not the start of a line" in caplog.text


def test_csv_resume_without_offset_skips_rows(tmp_path: Path) -> None:
    path = write(tmp_path, "t.csv", "id\n1\n\n2\n3\n")

    _, rest = read(path, Position(2))

    assert [(row.number, row.line, row.values) for row in rest] == [(3, 5, {"id": "3"})]


def test_csv_batches_can_be_read_twice(tmp_path: Path) -> None:
    path = write(tmp_path, "t.csv", "id\n1\n2\n")

    with open_source(path) as source:
        first = [row.values for batch in source.batches() for row in batch]
        second = [row.values for batch in source.batches() for row in batch]

    assert first == second == [{"id": "1"}, {"id": "2"}]


@pytest.mark.parametrize(
    ("suffix", "compress"), [(".gz", gzip.compress), (".bz2", bz2.compress)]
)
def test_csv_compressed_reads_without_offsets(
    tmp_path: Path, suffix: str, compress: object
) -> None:
    data = compress(b"id,name\n1,Ann\n2,Bob\n")  # type: ignore[operator]
    path = write(tmp_path, "t.csv" + suffix, data)

    columns, rows = read(path)

    assert columns == ["id", "name"]
    assert values(rows) == [{"id": "1", "name": "Ann"}, {"id": "2", "name": "Bob"}]
    assert [row.offset for row in rows] == [None, None]


def test_csv_compressed_resume_skips_rows(tmp_path: Path) -> None:
    path = write(tmp_path, "t.csv.gz", gzip.compress(b"id\n1\n2\n3\n"))

    _, rest = read(path, Position(2, 3, None))

    assert [(row.number, row.line, row.values) for row in rest] == [(3, 4, {"id": "3"})]


def test_csv_zstd_reads_every_frame(tmp_path: Path) -> None:
    zstandard = pytest.importorskip("zstandard")
    compressor = zstandard.ZstdCompressor()
    data = compressor.compress(b"id\n1\n") + compressor.compress(b"2\n")
    path = write(tmp_path, "t.csv.zst", data)

    _, rows = read(path)

    assert values(rows) == [{"id": "1"}, {"id": "2"}]
    assert rows[0].offset is None


def test_csv_zstd_without_package_raises(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "zstandard", None)
    path = write(tmp_path, "t.csv.zst", b"not read")

    with pytest.raises(InputError) as caught:
        read(path)

    assert str(caught.value) == (
        f"{path}: reading .zst files needs the zstandard package; pip install "
        "zstandard, or decompress the file first"
    )


def test_csv_damaged_gzip_raises(tmp_path: Path) -> None:
    data = gzip.compress(b"id\n" + b"1\n" * 1000)
    path = write(tmp_path, "t.csv.gz", data[:-30] + b"\x00" * 30)

    with pytest.raises(InputError, match=r"t\.csv\.gz: the data is damaged after"):
        read(path)


def test_csv_reads_standard_input(monkeypatch: pytest.MonkeyPatch) -> None:
    stdin = SimpleNamespace(buffer=io.BytesIO(b"id,name\n1,Ann\n"))
    monkeypatch.setattr(sys, "stdin", stdin)

    with open_source("-", SourceOptions(format="csv")) as source:
        rows = [row for batch in source.batches() for row in batch]
        with pytest.raises(InputError, match="standard input can be read only once"):
            next(iter(source.batches()))

    assert values(rows) == [{"id": "1", "name": "Ann"}]
    assert rows[0].offset is None
    assert not stdin.buffer.closed


def test_csv_utf16_standard_input_stays_open(monkeypatch: pytest.MonkeyPatch) -> None:
    stdin = SimpleNamespace(buffer=io.BytesIO("id\n1\n".encode("utf-16")))
    monkeypatch.setattr(sys, "stdin", stdin)

    _, rows = read("-", format="csv", encoding="utf-16")

    assert values(rows) == [{"id": "1"}]
    assert not stdin.buffer.closed


def test_csv_unclosed_quote_raises(tmp_path: Path) -> None:
    path = write(tmp_path, "t.csv", 'a,b\n1,2\n3,"x\n4,5\n')

    with pytest.raises(InputError) as caught:
        read(path)

    assert str(caught.value) == (
        f"{path}, line 3: a quoted field starting on this line has no closing "
        'quote; check for a stray " character'
    )


def test_csv_carriage_return_line_ends_raise(tmp_path: Path) -> None:
    path = write(tmp_path, "t.csv", "a,b\r1,2\r")

    with pytest.raises(InputError) as caught:
        read(path)

    assert str(caught.value) == (
        f"{path}, line 1: a carriage return alone ends a line; save the file with "
        "LF or CRLF line ends"
    )


def test_csv_field_longer_than_python_default_limit(tmp_path: Path) -> None:
    long_text = "x" * 300_000
    path = write(tmp_path, "t.csv", f'id,doc\n1,"{long_text}"\n')

    _, rows = read(path)

    assert rows[0].values == {"id": "1", "doc": long_text}
