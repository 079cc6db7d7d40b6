"""End to end: inputs as people keep them, through the real CLI and service.

Every test writes its input in ``tmp_path`` (workbooks with openpyxl, text
files byte by byte), runs ``python -m batchrun`` as a subprocess against a
`batchrun serve` on loopback, and compares the variables the service
received, row by row, and the exit code. Requests are matched to rows
through the Idempotency-Key header, "<run_id>-<row>".
"""

from __future__ import annotations

import bz2
import csv
import datetime as dt
import gzip
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import openpyxl
import pytest
import zstandard
from conftest import Service, logged, run_id
from openpyxl.styles import Font
from openpyxl.utils.datetime import CALENDAR_MAC_1904

TOKEN = "tok-inputs-3c9e71b2d6a4f805"
ORG = "demo-org"
FLOW = "welcome-message"
RUN_TIMEOUT = 60


# Running the CLI


def cli(
    *args: str, cwd: Path, token: str | None = TOKEN, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `python -m batchrun ARGS` in ``cwd`` with no BATCHRUN_* setting.

    The working directory is the test's own, so no batchrun.toml of the
    machine's can change an option.
    """
    environment = {k: v for k, v in os.environ.items() if not k.startswith("BATCHRUN_")}
    if token is not None:
        environment["BATCHRUN_TOKEN"] = token
    feed: dict[str, Any] = (
        {"input": stdin} if stdin is not None else {"stdin": subprocess.DEVNULL}
    )
    return subprocess.run(
        [sys.executable, "-m", "batchrun", *args],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        **feed,
    )


def run_batch(
    service: Service,
    input_path: Path | str,
    output: Path,
    *extra: str,
    stdin: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """`batchrun run INPUT -o OUTPUT` against ``service``, quietly."""
    return cli(
        "run",
        str(input_path),
        "-o",
        str(output),
        "--base-url",
        service.url,
        "--org",
        ORG,
        "--flow",
        FLOW,
        "-q",
        *extra,
        cwd=output.parent,
        stdin=stdin,
    )


def check(input_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """`batchrun check INPUT` with no token, no service and no base URL."""
    return cli("check", str(input_path), *extra, cwd=input_path.parent, token=None)


def requests_by_row(
    records: list[dict[str, Any]], output: Path
) -> dict[int, dict[str, Any]]:
    """Row number -> its only request; every request must belong to the run."""
    prefix = run_id(output) + "-"
    result: dict[int, dict[str, Any]] = {}
    for record in records:
        key = record["idempotency_key"]
        assert key.startswith(prefix), key
        number = int(key[len(prefix) :])
        assert number not in result, f"row {number} was sent twice"
        result[number] = record
    return result


def of_run(records: list[dict[str, Any]], output: Path) -> list[dict[str, Any]]:
    """The requests of the run whose output is ``output``."""
    prefix = run_id(output) + "-"
    return [r for r in records if r["idempotency_key"].startswith(prefix)]


def sent(records: list[dict[str, Any]], output: Path) -> dict[int, Any]:
    """Row number -> the variables the service received for it."""
    return {n: r["variables"] for n, r in requests_by_row(records, output).items()}


def outcomes(output: Path) -> dict[int, dict[str, str]]:
    """Row number -> its record in a CSV output."""
    with output.open(encoding="utf-8", newline="") as file:
        records = list(csv.DictReader(file))
    result = {int(record["row"]): record for record in records}
    assert len(result) == len(records), "a row has more than one record"
    return result


def errors_of(output: Path, status: str) -> dict[int, str]:
    """Row number -> error, for the records with ``status``."""
    return {n: r["error"] for n, r in outcomes(output).items() if r["status"] == status}


def error_line(message: str) -> list[str]:
    return [f"batchrun: error: {message}"]


# Writing inputs


def write_text(path: Path, lines: list[str], encoding: str = "utf-8") -> Path:
    path.write_bytes("".join(line + "\n" for line in lines).encode(encoding))
    return path


def write_xlsx(
    path: Path,
    sheets: dict[str, list[list[Any]]],
    *,
    epoch: dt.datetime | None = None,
    styled_rows: range = range(0),
) -> Path:
    """A workbook with ``sheets`` in order; ``styled_rows`` get bold, empty cells."""
    workbook = openpyxl.Workbook()
    if epoch is not None:
        workbook.epoch = epoch
    for index, (title, rows) in enumerate(sheets.items()):
        sheet = workbook.active if index == 0 else workbook.create_sheet()
        sheet.title = title
        for row in rows:
            sheet.append(row)
        if index == 0:
            for number in styled_rows:
                for column in range(1, 4):
                    sheet.cell(row=number, column=column).font = Font(bold=True)
    workbook.save(path)
    return path


# 1. Excel workbooks

CONTACTS_HEADER = [
    "name",
    "zip",
    "phone",
    "visits",
    "score",
    "joined",
    "last_seen",
    "code",
    "vip",
    "note",
]
CONTACTS_ROWS: list[list[Any]] = [
    CONTACTS_HEADER,
    [
        "Ada",
        "02134",
        15550100123,
        5.0,
        2.5,
        dt.date(2024, 2, 29),
        dt.datetime(2024, 3, 1, 9, 30, 15),
        "1e5",
        True,
        None,
    ],
    [],
    [
        "Bob",
        "00501",
        447700900123.0,
        12,
        -0.75,
        dt.date(1999, 12, 31),
        dt.datetime(2000, 1, 1),
        "NA",
        False,
        "  spaced  ",
    ],
]
CONTACTS_SENT = {
    1: {
        "name": "Ada",
        "zip": "02134",
        "phone": 15550100123,
        "visits": 5,
        "score": 2.5,
        "joined": "2024-02-29",
        "last_seen": "2024-03-01T09:30:15",
        "code": "1e5",
        "vip": True,
        "note": "",
    },
    2: {
        "name": "Bob",
        "zip": "00501",
        "phone": 447700900123,
        "visits": 12,
        "score": -0.75,
        "joined": "1999-12-31",
        "last_seen": "2000-01-01T00:00:00",
        "code": "NA",
        "vip": False,
        "note": "  spaced  ",
    },
}
ARCHIVE_ROWS: list[list[Any]] = [["id", "closed"], [7, dt.date(2020, 1, 2)]]


@pytest.mark.parametrize("epoch", [None, CALENDAR_MAC_1904], ids=["1900", "1904"])
def test_xlsx_first_sheet_cells_arrive_typed_and_exact(
    serve: Any, tmp_path: Path, epoch: dt.datetime | None
) -> None:
    service = serve()
    sheets = {"Contacts": CONTACTS_ROWS, "Archive": ARCHIVE_ROWS}
    input_path = write_xlsx(
        tmp_path / "contacts.xlsx", sheets, epoch=epoch, styled_rows=range(1000, 2001)
    )
    output = tmp_path / "out.csv"

    result = run_batch(service, input_path, output)
    records = logged(service)

    assert result.returncode == 0, result.stderr
    assert sent(records, output) == CONTACTS_SENT
    assert sorted(outcomes(output)) == [1, 2]
    assert "batchrun: 2 rows read: 2 succeeded, 0 failed, 0 invalid" in result.stderr


def test_xlsx_sheet_option_reads_the_named_sheet(serve: Any, tmp_path: Path) -> None:
    service = serve()
    sheets = {"Contacts": CONTACTS_ROWS, "Archive": ARCHIVE_ROWS}
    input_path = write_xlsx(tmp_path / "book.xlsx", sheets)
    output = tmp_path / "out.csv"

    result = run_batch(service, input_path, output, "--sheet", "Archive")
    records = logged(service)

    assert result.returncode == 0, result.stderr
    assert sent(records, output) == {1: {"id": 7, "closed": "2020-01-02"}}


def test_xlsx_unknown_sheet_exits_2_listing_the_sheets(
    serve: Any, tmp_path: Path
) -> None:
    service = serve()
    sheets = {"Contacts": CONTACTS_ROWS, "Archive": ARCHIVE_ROWS}
    input_path = write_xlsx(tmp_path / "book.xlsx", sheets)

    result = run_batch(service, input_path, tmp_path / "out.csv", "--sheet", "Nope")

    assert result.returncode == 2
    assert result.stderr.splitlines() == error_line(
        f"{input_path}: no sheet named 'Nope'; pass --sheet with one of: "
        "'Contacts', 'Archive'"
    )
    assert logged(service) == []


LEADS_PROBLEMS = {
    2: "sheet Leads, row 4: cell B4 holds the error #N/A; fix the formula or clear "
    "the cell",
    3: "sheet Leads, row 5: cell C5 holds a value but the header names only 2 "
    "columns; name the column or clear the cell",
}


def test_xlsx_bad_rows_are_invalid_naming_their_sheet_row(
    serve: Any, tmp_path: Path
) -> None:
    service = serve()
    rows: list[list[Any]] = [
        ["name", "email"],  # sheet row 1
        ["Ann", "a@x"],  # row 2, data row 1
        [],  # row 3, skipped
        ["Bob", "#N/A"],  # row 4, data row 2: an error cell
        ["Cy", "c@x", "stray"],  # row 5, data row 3: past the header
        ["Di", "d@x"],  # row 6, data row 4
    ]
    input_path = write_xlsx(tmp_path / "leads.xlsx", {"Leads": rows})
    output = tmp_path / "out.csv"

    result = run_batch(service, input_path, output)
    records = logged(service)

    assert result.returncode == 1
    assert sent(records, output) == {
        1: {"name": "Ann", "email": "a@x"},
        4: {"name": "Di", "email": "d@x"},
    }
    assert errors_of(output, "invalid") == LEADS_PROBLEMS
    checked = check(input_path)
    assert checked.returncode == 1
    assert checked.stdout.splitlines()[-2:] == [
        f"  row {number}: {problem}" for number, problem in LEADS_PROBLEMS.items()
    ]


def test_xlsx_header_problem_exits_2_naming_its_sheet_row(
    serve: Any, tmp_path: Path
) -> None:
    service = serve()
    rows: list[list[Any]] = [[], [], ["id", None, "email"], [1, "x", "a@x"]]
    input_path = write_xlsx(tmp_path / "data.xlsx", {"Data": rows})

    result = run_batch(service, input_path, tmp_path / "out.csv")

    assert result.returncode == 2
    assert result.stderr.splitlines() == error_line(
        f"{input_path}, sheet Data, row 3: header cell(s) in column(s) B are "
        "empty; give every column a name in the header row"
    )
    assert logged(service) == []


@pytest.mark.parametrize(
    ("policy", "blank"),
    [("null", {"note": None}), ("omit", {})],
)
def test_xlsx_empty_cell_follows_empty_option(
    serve: Any, tmp_path: Path, policy: str, blank: dict[str, Any]
) -> None:
    service = serve()
    rows: list[list[Any]] = [["id", "note", "zip"], [1, None, "02134"]]
    input_path = write_xlsx(tmp_path / "in.xlsx", {"Sheet": rows})
    output = tmp_path / "out.csv"

    result = run_batch(service, input_path, output, "--empty", policy)
    records = logged(service)

    assert result.returncode == 0, result.stderr
    assert sent(records, output) == {1: {"id": 1, **blank, "zip": "02134"}}


# 2. Delimited text: TSV, semicolons, code pages, ragged rows, headers


def test_tsv_cells_arrive_as_exact_text(serve: Any, tmp_path: Path) -> None:
    service = serve()
    input_path = write_text(
        tmp_path / "export.tsv",
        [
            "name\tcity\tamount",
            "Smith, Ada\tSão Paulo; SP\t1,5",
            'Bob "B"\t\t007',
        ],
    )
    output = tmp_path / "out.csv"

    result = run_batch(service, input_path, output)
    records = logged(service)

    assert result.returncode == 0, result.stderr
    assert sent(records, output) == {
        1: {"name": "Smith, Ada", "city": "São Paulo; SP", "amount": "1,5"},
        2: {"name": 'Bob "B"', "city": "", "amount": "007"},
    }


SEMICOLON_LINES = [
    "Name;Betrag;Datum",
    '"Müller, Hans";1.234,56;01.02.2024',
    "Élodie;7,5;29.02.2024",
]
SEMICOLON_SENT = {
    1: {"Name": "Müller, Hans", "Betrag": "1.234,56", "Datum": "01.02.2024"},
    2: {"Name": "Élodie", "Betrag": "7,5", "Datum": "29.02.2024"},
}


@pytest.mark.parametrize(
    "extra", [(), ("--delimiter", ";")], ids=["detected", "explicit"]
)
def test_semicolon_csv_is_split_on_semicolons(
    serve: Any, tmp_path: Path, extra: tuple[str, ...]
) -> None:
    service = serve()
    input_path = write_text(tmp_path / "europe.csv", SEMICOLON_LINES)
    output = tmp_path / "out.csv"

    result = run_batch(service, input_path, output, *extra)
    records = logged(service)

    assert result.returncode == 0, result.stderr
    assert sent(records, output) == SEMICOLON_SENT


CP1252_LINES = [
    "name,city,note",
    "Plain,Oslo,ascii only",
    "José,São Paulo,“quoted” – 5 €",
    "Renée,München,naïve",
]


def test_cp1252_file_with_encoding_sends_exact_text(serve: Any, tmp_path: Path) -> None:
    service = serve()
    input_path = write_text(tmp_path / "legacy.csv", CP1252_LINES, "cp1252")
    output = tmp_path / "out.csv"

    result = run_batch(service, input_path, output, "--encoding", "cp1252")
    records = logged(service)

    assert result.returncode == 0, result.stderr
    assert sent(records, output) == {
        1: {"name": "Plain", "city": "Oslo", "note": "ascii only"},
        2: {"name": "José", "city": "São Paulo", "note": "“quoted” – 5 €"},
        3: {"name": "Renée", "city": "München", "note": "naïve"},
    }


def test_cp1252_file_without_encoding_exits_2_before_any_request(
    serve: Any, tmp_path: Path
) -> None:
    service = serve()
    input_path = write_text(tmp_path / "legacy.csv", CP1252_LINES, "cp1252")
    offset = input_path.read_bytes().index("é".encode("cp1252"))
    output = tmp_path / "out.csv"

    result = run_batch(service, input_path, output)

    assert result.returncode == 2
    assert result.stderr.splitlines() == error_line(
        f"{input_path}, line 3: byte 0xe9 at byte offset {offset} is not valid "
        "UTF-8; pass the file's encoding, for example --encoding cp1252"
    )
    assert logged(service) == []
    assert not output.exists()


def test_rows_with_wrong_field_count_are_invalid_and_the_run_goes_on(
    serve: Any, tmp_path: Path
) -> None:
    service = serve()
    input_path = write_text(
        tmp_path / "ragged.csv",
        ["id,name,plan", "1,Ann,gold", "2,Bob", "3,Cy,gold,extra", "4,Di,silver"],
    )
    output = tmp_path / "out.csv"

    result = run_batch(service, input_path, output)
    records = logged(service)

    assert result.returncode == 1
    assert sent(records, output) == {
        1: {"id": "1", "name": "Ann", "plan": "gold"},
        4: {"id": "4", "name": "Di", "plan": "silver"},
    }
    assert errors_of(output, "invalid") == {
        2: "line 3: 2 fields, expected 3 (header has 3 columns)",
        3: "line 4: 4 fields, expected 3 (header has 3 columns)",
    }
    assert {outcomes(output)[n]["attempts"] for n in (2, 3)} == {"0"}


def test_blank_and_whitespace_only_lines_are_skipped(
    serve: Any, tmp_path: Path
) -> None:
    service = serve()
    input_path = tmp_path / "gappy.csv"
    input_path.write_bytes(b"\nid,name\n\n1,Ann\n   \n\t\n,\r\n2,Bob\r\n\n\n")
    output = tmp_path / "out.csv"

    result = run_batch(service, input_path, output)
    records = logged(service)

    assert result.returncode == 0, result.stderr
    assert sent(records, output) == {
        1: {"id": "1", "name": "Ann"},
        2: {"id": "2", "name": "Bob"},
    }
    assert sorted(outcomes(output)) == [1, 2]


@pytest.mark.parametrize(
    ("header", "line", "problem"),
    [
        (
            "id,name,id,email,name",
            1,
            "the header repeats column names: 'id' (columns 1, 3); 'name' "
            "(columns 2, 5); rename them so every column is unique",
        ),
        (
            "\nid,,email, ",
            2,
            "header column(s) 2, 4 have no name; give every column a name in "
            "the header row",
        ),
    ],
    ids=["duplicate", "empty"],
)
def test_bad_header_exits_2_naming_the_column_positions(
    serve: Any, tmp_path: Path, header: str, line: int, problem: str
) -> None:
    service = serve()
    input_path = write_text(tmp_path / "in.csv", [header, "1,2,3,4,5"])

    result = run_batch(service, input_path, tmp_path / "out.csv")

    assert result.returncode == 2
    assert result.stderr.splitlines() == error_line(
        f"{input_path}, line {line}: {problem}"
    )
    assert logged(service) == []


# 3. Compressed files and standard input

PLAIN_CSV = 'id,name,note\n1,Zoë,"two\nlines"\n2,Bob,"a, b"\n'
CSV_SENT = {
    1: {"id": "1", "name": "Zoë", "note": "two\nlines"},
    2: {"id": "2", "name": "Bob", "note": "a, b"},
}
PLAIN_JSONL = '{"id": 1, "tags": ["a", "b"], "big": 12345678901234567890}\n\n'
PLAIN_JSONL += '{"id": 2, "name": "Zoë", "none": null}\n'
JSONL_SENT = {
    1: {"id": 1, "tags": ["a", "b"], "big": 12345678901234567890},
    2: {"id": 2, "name": "Zoë", "none": None},
}


def compress(data: bytes, suffix: str) -> bytes:
    if suffix == ".gz":
        return gzip.compress(data)
    if suffix == ".bz2":
        return bz2.compress(data)
    return zstandard.ZstdCompressor().compress(data)


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("in.csv.gz", PLAIN_CSV, CSV_SENT),
        ("in.jsonl.bz2", PLAIN_JSONL, JSONL_SENT),
        ("in.csv.zst", PLAIN_CSV, CSV_SENT),
    ],
    ids=["gzip", "bz2", "zstd"],
)
def test_compressed_input_sends_what_the_uncompressed_file_sends(
    serve: Any, tmp_path: Path, name: str, text: str, expected: dict[int, Any]
) -> None:
    service = serve()
    stem, suffix = os.path.splitext(name)
    plain = tmp_path / stem
    plain.write_text(text, encoding="utf-8", newline="")
    packed = tmp_path / name
    packed.write_bytes(compress(plain.read_bytes(), suffix))

    plain_result = run_batch(service, plain, tmp_path / "plain.csv")
    packed_result = run_batch(service, packed, tmp_path / "packed.csv")
    records = logged(service)

    assert (plain_result.returncode, packed_result.returncode) == (0, 0)
    plain_sent = sent(of_run(records, tmp_path / "plain.csv"), tmp_path / "plain.csv")
    packed_sent = sent(
        of_run(records, tmp_path / "packed.csv"), tmp_path / "packed.csv"
    )
    assert packed_sent == plain_sent == expected


def test_standard_input_with_format_is_read(serve: Any, tmp_path: Path) -> None:
    service = serve()
    output = tmp_path / "out.csv"

    result = run_batch(service, "-", output, "--format", "csv", stdin=PLAIN_CSV)
    records = logged(service)

    assert result.returncode == 0, result.stderr
    assert sent(records, output) == CSV_SENT


def test_standard_input_without_format_exits_2(serve: Any, tmp_path: Path) -> None:
    service = serve()

    result = run_batch(service, "-", tmp_path / "out.csv", stdin=PLAIN_CSV)

    assert result.returncode == 2
    assert result.stderr.splitlines() == error_line(
        "reading standard input needs --format (for example --format csv)"
    )
    assert logged(service) == []


# 4. Mapping rows to variables without editing the file

PEOPLE = ["first_name,email,phone,plan", "Ann,a@x,+1555,gold", "Bob,,+1666,"]


def test_columns_sends_only_those_columns(serve: Any, tmp_path: Path) -> None:
    service = serve()
    input_path = write_text(tmp_path / "in.csv", PEOPLE)
    output = tmp_path / "out.csv"

    result = run_batch(service, input_path, output, "--columns", "first_name,phone")
    records = logged(service)

    assert result.returncode == 0, result.stderr
    assert sent(records, output) == {
        1: {"first_name": "Ann", "phone": "+1555"},
        2: {"first_name": "Bob", "phone": "+1666"},
    }


def test_rename_and_set_change_names_and_add_constants(
    serve: Any, tmp_path: Path
) -> None:
    service = serve()
    input_path = write_text(tmp_path / "in.csv", PEOPLE)
    output = tmp_path / "out.csv"

    result = run_batch(
        service,
        input_path,
        output,
        "--rename",
        "first_name=name",
        "--rename",
        "phone=mobile",
        "--set",
        "campaign=spring",
        "--set",
        "filter=a=b",
    )
    records = logged(service)

    assert result.returncode == 0, result.stderr
    constants = {"campaign": "spring", "filter": "a=b"}
    assert sent(records, output) == {
        1: {"name": "Ann", "email": "a@x", "mobile": "+1555", "plan": "gold"}
        | constants,
        2: {"name": "Bob", "email": "", "mobile": "+1666", "plan": ""} | constants,
    }


def test_rename_onto_an_existing_column_exits_2_before_any_request(
    serve: Any, tmp_path: Path
) -> None:
    service = serve()
    input_path = write_text(tmp_path / "in.csv", PEOPLE)

    result = run_batch(
        service, input_path, tmp_path / "out.csv", "--rename", "first_name=email"
    )

    assert logged(service) == []
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert line.startswith("batchrun: error: ") and "first_name=email" in line


def test_require_records_rows_lacking_a_value_invalid_and_never_sends_them(
    serve: Any, tmp_path: Path
) -> None:
    service = serve()
    lines = [*PEOPLE, "Cy,c@x,+1777,silver", ",d@x,+1888,gold"]
    input_path = write_text(tmp_path / "in.csv", lines)
    output = tmp_path / "out.csv"

    result = run_batch(service, input_path, output, "--require", "first_name,email")
    records = logged(service)

    assert result.returncode == 1
    assert sent(records, output) == {
        1: {"first_name": "Ann", "email": "a@x", "phone": "+1555", "plan": "gold"},
        3: {"first_name": "Cy", "email": "c@x", "phone": "+1777", "plan": "silver"},
    }
    assert errors_of(output, "invalid") == {
        2: "line 3: missing required variable(s): email",
        4: "line 5: missing required variable(s): first_name",
    }
    assert "batchrun: 4 rows read: 2 succeeded, 0 failed, 2 invalid" in result.stderr


def test_row_id_var_sends_the_idempotency_key(serve: Any, tmp_path: Path) -> None:
    service = serve()
    input_path = write_text(tmp_path / "in.csv", PEOPLE)
    output = tmp_path / "out.csv"

    result = run_batch(service, input_path, output, "--row-id-var", "rid")
    requests = requests_by_row(logged(service), output)

    assert result.returncode == 0, result.stderr
    assert sorted(requests) == [1, 2]
    for number, request in requests.items():
        key = request["idempotency_key"]
        assert key == f"{run_id(output)}-{number}"
        assert request["variables"]["rid"] == key
        assert outcomes(output)[number]["row_id"] == key


@pytest.mark.parametrize(
    ("offset", "limit", "rows"),
    [(0, 3, [1, 2, 3]), (5, 4, [6, 7, 8, 9]), (18, 5, [19, 20])],
)
def test_offset_and_limit_send_exactly_that_slice(
    serve: Any, tmp_path: Path, offset: int, limit: int, rows: list[int]
) -> None:
    service = serve()
    lines = ["id,name", *(f"{n},name{n}" for n in range(1, 21))]
    input_path = write_text(tmp_path / "in.csv", lines)
    output = tmp_path / "out.csv"

    result = run_batch(
        service, input_path, output, "--offset", str(offset), "--limit", str(limit)
    )
    records = logged(service)

    assert result.returncode == 0, result.stderr
    assert sent(records, output) == {
        n: {"id": str(n), "name": f"name{n}"} for n in rows
    }
    assert sorted(outcomes(output)) == rows


# 5. batchrun check and run --dry-run: read as a run would, send nothing

CHECK_LINES = [
    "id,first_name,email,plan",
    "1,Ann,a@x,gold",
    "2,Bob,,silver",
    "3,Cy,c@x,",
    "4,Di,d@x,gold",
]
CHECK_OPTIONS = (
    "--columns",
    "id,first_name,email",
    "--rename",
    "first_name=name",
    "--set",
    "campaign=spring",
    "--empty",
    "null",
)
CHECK_CLEAN_STDOUT = [
    "columns: id, first_name, email, plan",
    "variables sent: id, name, email, campaign",
    'example 1: {"id": "1", "name": "Ann", "email": "a@x", "campaign": "spring"}',
    'example 2: {"id": "2", "name": "Bob", "email": null, "campaign": "spring"}',
    'example 3: {"id": "3", "name": "Cy", "email": "c@x", "campaign": "spring"}',
    "no problems found",
]


def test_check_prints_rows_columns_variables_and_examples(tmp_path: Path) -> None:
    input_path = write_text(tmp_path / "in.csv", CHECK_LINES)

    result = check(input_path, *CHECK_OPTIONS)

    assert (result.returncode, result.stderr) == (0, "")
    expected = [f"{input_path}: 4 rows", *CHECK_CLEAN_STDOUT]
    assert result.stdout.splitlines() == expected
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv"]


def test_check_examples_are_what_a_run_sends(serve: Any, tmp_path: Path) -> None:
    service = serve()
    input_path = write_text(tmp_path / "in.csv", CHECK_LINES)
    output = tmp_path / "out.csv"

    checked = check(input_path, *CHECK_OPTIONS, "--show", "4")
    result = run_batch(service, input_path, output, *CHECK_OPTIONS)
    records = logged(service)

    assert (checked.returncode, result.returncode) == (0, 0)
    examples = [
        json.loads(line.partition(": ")[2])
        for line in checked.stdout.splitlines()
        if line.startswith("example ")
    ]
    assert examples == [sent(records, output)[n] for n in (1, 2, 3, 4)]


def test_check_lists_row_problems_with_their_lines_and_exits_1(
    tmp_path: Path,
) -> None:
    lines = ["id,name,email", "1,Ann,a@x", "2,Bob", "3,Cy,", "1,Di,d@x", "5,Ed,e@x"]
    input_path = write_text(tmp_path / "in.csv", lines)

    result = check(input_path, "--require", "email", "--key-column", "id")

    assert (result.returncode, result.stderr) == (1, "")
    assert result.stdout.splitlines() == [
        f"{input_path}: 5 rows",
        "columns: id, name, email",
        "variables sent: id, name, email",
        'example 1: {"id": "1", "name": "Ann", "email": "a@x"}',
        'example 2: {"id": "1", "name": "Di", "email": "d@x"}',
        'example 3: {"id": "5", "name": "Ed", "email": "e@x"}',
        "3 problem(s):",
        "  row 2: line 3: 2 fields, expected 3 (header has 3 columns)",
        "  row 3 (line 4): missing required variable(s): email",
        "  row 4 (line 5): duplicate id '1' (first on line 2)",
    ]


@pytest.mark.parametrize(
    ("name", "content", "problem"),
    [
        ("missing.csv", None, "no such file; check the path"),
        (
            "dup.csv",
            "a,b,a\n1,2,3\n",
            "line 1: the header repeats column names: 'a' (columns 1, 3); rename "
            "them so every column is unique",
        ),
    ],
    ids=["missing", "duplicate-header"],
)
def test_check_exits_2_when_the_file_cannot_be_used(
    tmp_path: Path, name: str, content: str | None, problem: str
) -> None:
    input_path = tmp_path / name
    if content is not None:
        input_path.write_text(content, encoding="utf-8")

    result = check(input_path)

    assert (result.returncode, result.stdout) == (2, "")
    separator = ": " if content is None else ", "
    assert result.stderr.splitlines() == error_line(f"{input_path}{separator}{problem}")


@pytest.mark.parametrize(
    ("extra", "code"), [((), 0), (("--require", "email"), 1)], ids=["clean", "problems"]
)
def test_dry_run_prints_the_check_and_sends_nothing(
    serve: Any, tmp_path: Path, extra: tuple[str, ...], code: int
) -> None:
    service = serve()
    input_path = write_text(tmp_path / "in.csv", CHECK_LINES)
    output = tmp_path / "out.csv"

    checked = check(input_path, *CHECK_OPTIONS, *extra)
    result = run_batch(service, input_path, output, "--dry-run", *CHECK_OPTIONS, *extra)

    assert (result.returncode, checked.returncode) == (code, code)
    assert result.stdout == checked.stdout
    assert result.stderr == ""
    assert logged(service) == []
    assert not output.exists()
    assert not Path(str(output) + ".checkpoint").exists()
