"""JSON Lines input: JSON types kept, bad lines as invalid rows, offsets, resume."""

from __future__ import annotations

import gzip
import io
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from batchrun.errors import InputError
from batchrun.rows import Row
from batchrun.sources import Position, SourceOptions, open_source, textio


def write(tmp_path: Path, name: str, data: bytes | str) -> str:
    path = tmp_path / name
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return str(path)


def read(path: str, start: Position | None = None, **options: object) -> list[Row]:
    with open_source(path, SourceOptions(**options)) as source:  # type: ignore[arg-type]
        assert source.columns is None
        return [row for batch in source.batches(start) for row in batch]


def test_jsonl_values_keep_json_types(tmp_path: Path) -> None:
    line = (
        '{"id": 7, "big": 123456789012345678901234567890, "neg": -18446744073709551617,'
        ' "f": 0.1, "e": 1e5, "t": true, "n": null, "s": "00123",'
        ' "nest": {"a": [1, {"b": [2.5, "x"]}]}, "u": "caf\\u00e9"}\n'
    )
    path = write(tmp_path, "t.jsonl", line)

    rows = read(path)

    assert rows[0].values == {
        "id": 7,
        "big": 123456789012345678901234567890,
        "neg": -18446744073709551617,
        "f": 0.1,
        "e": 100000.0,
        "t": True,
        "n": None,
        "s": "00123",
        "nest": {"a": [1, {"b": [2.5, "x"]}]},
        "u": "café",
    }
    assert isinstance(rows[0].values["big"], int)
    assert (rows[0].number, rows[0].line, rows[0].error) == (1, 1, None)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('{"x": NaN}', "NaN is not allowed in strict JSON; use null or a number"),
        (
            '{"x": Infinity}',
            "Infinity is not allowed in strict JSON; use null or a number",
        ),
        (
            '{"x": [-Infinity]}',
            "-Infinity is not allowed in strict JSON; use null or a number",
        ),
        ('{"x": 1e400}', "the number 1e400 is too large for a float"),
        (
            '{"x": 1,, }',
            "Expecting property name enclosed in double quotes at column 9",
        ),
        ('{"x": 1} {"y": 2}', "Extra data at column 10"),
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ],
)
def test_jsonl_bad_line_is_an_invalid_row(
    tmp_path: Path, text: str, reason: str
) -> None:
    path = write(tmp_path, "t.jsonl", '{"ok": 1}\n' + text + '\n{"ok": 2}\n')

    rows = read(path)

    assert [(row.number, row.line, row.error) for row in rows] == [
        (1, 1, None),
        (2, 2, f"line 2: not valid JSON ({reason})"),
        (3, 3, None),
    ]
    assert rows[1].values is None


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("[1, 2]", "a JSON array"),
        ('"text"', "a JSON string"),
        ("12", "a JSON number"),
        ("1.5", "a JSON number"),
        ("true", "a JSON boolean"),
        ("null", "JSON null"),
    ],
)
def test_jsonl_non_object_is_an_invalid_row(
    tmp_path: Path, text: str, kind: str
) -> None:
    path = write(tmp_path, "t.jsonl", '{"ok": 1}\n' + text + "\n")

    rows = read(path)

    assert rows[1].error == f"line 2: {kind}, expected an object"
    assert rows[1].values is None


def test_jsonl_blank_lines_are_skipped_and_not_counted(tmp_path: Path) -> None:
    path = write(tmp_path, "t.jsonl", '\n{"a": 1}\n  \n\t\r\n{"a": 2}\n\n')

    rows = read(path)

    assert [(row.number, row.line, row.values) for row in rows] == [
        (1, 2, {"a": 1}),
        (2, 5, {"a": 2}),
    ]


def test_jsonl_bom_and_crlf(tmp_path: Path) -> None:
    path = write(tmp_path, "t.jsonl", b'\xef\xbb\xbf{"a": "x"}\r\n{"a": "y"}\r\n')

    rows = read(path)

    assert [row.values for row in rows] == [{"a": "x"}, {"a": "y"}]


def test_jsonl_json_document_raises(tmp_path: Path) -> None:
    path = write(tmp_path, "t.jsonl", '\n[\n  {"a": 1},\n  {"a": 2}\n]\n')

    with pytest.raises(InputError) as caught:
        read(path)

    assert str(caught.value) == (
        f"{path}, line 2: the file holds one JSON document spread over lines, not "
        "JSON Lines; write one JSON object per line (for example with jq -c '.[]')"
    )


def test_jsonl_not_utf8_raises(tmp_path: Path) -> None:
    path = write(tmp_path, "t.jsonl", b'{"a": "caf\xe9"}\n')

    with pytest.raises(InputError) as caught:
        read(path)

    assert str(caught.value) == (
        f"{path}, line 1: byte 0xe9 at byte offset 10 is not valid UTF-8; pass the "
        "file's encoding, for example --encoding cp1252"
    )


def test_jsonl_given_encoding_decodes(tmp_path: Path) -> None:
    path = write(tmp_path, "t.jsonl", '{"a": "café"}\n'.encode("cp1252"))

    rows = read(path, encoding="cp1252")

    assert rows[0].values == {"a": "café"}


def test_jsonl_offsets_point_just_past_each_line(tmp_path: Path) -> None:
    data = b'{"a": 1}\n\n{"a": "\xc3\xa9"}\r\n{"a": 3}'
    path = write(tmp_path, "t.jsonl", data)

    rows = read(path)

    assert [row.offset for row in rows] == [9, data.index(b'{"a": 3}'), len(data)]


def test_jsonl_offsets_survive_small_chunks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(textio, "CHUNK_BYTES", 20)
    lines = [f'{{"n": {n}}}\n' for n in range(1, 51)]
    path = write(tmp_path, "t.jsonl", "".join(lines))

    rows = read(path, batch_size=8)

    assert [row.values for row in rows] == [{"n": n} for n in range(1, 51)]
    assert [row.line for row in rows] == list(range(1, 51))
    assert [row.offset for row in rows] == [
        len("".join(lines[: n + 1])) for n in range(50)
    ]


def test_jsonl_resume_seeks_to_offset(tmp_path: Path) -> None:
    path = write(tmp_path, "t.jsonl", "".join(f'{{"n": {n}}}\n\n' for n in range(5)))
    full = read(path)
    done = full[2]

    rest = read(path, Position(done.number, done.line, done.offset))

    assert [(row.number, row.line, row.values, row.offset) for row in rest] == [
        (row.number, row.line, row.values, row.offset) for row in full[3:]
    ]


def test_jsonl_resume_seek_does_not_reread_earlier_rows(tmp_path: Path) -> None:
    path = write(tmp_path, "t.jsonl", '{"n": 1}\n{"n": 2}\n')
    offset = read(path)[0].offset
    Path(path).write_bytes(b'xxxxxxx\n{"n": 2}\n')

    rest = read(path, Position(1, 1, offset))

    assert [(row.number, row.line, row.values) for row in rest] == [(2, 2, {"n": 2})]


def test_jsonl_resume_with_bad_offset_skips_rows(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write(tmp_path, "t.jsonl", '{"n": 1}\n{"n": 2}\n{"n": 3}\n')

    rest = read(path, Position(2, 2, 4))

    assert [(row.number, row.values) for row in rest] == [(3, {"n": 3})]
    assert "byte offset 4 is not the start of a line" in caplog.text


def test_jsonl_gzip_reads_without_offsets_and_resumes_by_skipping(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, "t.jsonl.gz", gzip.compress(b'{"n": 1}\n{"n": 2}\n'))

    rows = read(path)
    rest = read(path, Position(1, 1, None))

    assert [(row.values, row.offset) for row in rows] == [
        ({"n": 1}, None),
        ({"n": 2}, None),
    ]
    assert [(row.number, row.values) for row in rest] == [(2, {"n": 2})]


def test_jsonl_reads_standard_input(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", SimpleNamespace(buffer=io.BytesIO(b'{"a":1}\n')))

    rows = read("-", format="jsonl")

    assert [(row.values, row.offset) for row in rows] == [({"a": 1}, None)]


def test_jsonl_batches_hold_at_most_batch_size_rows(tmp_path: Path) -> None:
    path = write(tmp_path, "t.jsonl", '{"a": 1}\n' * 5)

    with open_source(path, SourceOptions(batch_size=2)) as source:
        sizes = [len(batch) for batch in source.batches()]

    assert sizes == [2, 2, 1]
