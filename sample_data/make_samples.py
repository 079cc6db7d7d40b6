"""Regenerate the sample contacts: contacts.csv, contacts.jsonl, contacts.parquet.

    python sample_data/make_samples.py [--out DIR]

The rows are made up and seeded, so every run writes the same 300 contacts.
All phone numbers are in ranges reserved for fiction (US 555-01xx, UK
07700 900xxx, Australia 0491 570xxx) and all addresses are at example.com or
example.org. Five rows lack a variable the demo flow requires (three phones,
two first names) so that a demo run shows rejected rows.

The three files hold the same rows, every value as text: the CSV as written,
the JSONL with string values only, the Parquet with string columns only. The
CSV and JSONL come out byte for byte the same on every run; the Parquet's
bytes also carry the pyarrow version that wrote them, so compare its rows.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import random
import unicodedata
from pathlib import Path

SEED = 20240601
ROWS = 300
COLUMNS = (
    "contact_id",
    "first_name",
    "last_name",
    "phone",
    "zip",
    "email",
    "plan",
    "signup_date",
)
FIRST_NAMES = (
    "Ada Alan Amara Ana Aoife Ben Björn Carmen Chloé Chen Dana David Elena "
    "Emeka Fatima Grace Hannah Hiroshi Ibrahim Isabel James José Kai Kwame "
    "Laura Leila Liam Łukasz Maya Mei Mohammed Nadia Noah Olivia Omar Priya "
    "Rafael Renée Rosa Sam Sara Siobhán Sofia Tom Valentina Wei Yusuf Zoë"
).split()
LAST_NAMES = (
    "Adams Ahmed Bennett Brown Campbell Chen Clarke D'Souza Dubois Evans "
    "Fischer García Gonzalez Hall Ito Johnson Kim Kowalski Lee Lopez Martin "
    "Müller Nguyen Núñez O'Brien O'Connor Okafor Patel Reyes Rossi Schmidt "
    "Silva Singh Smith Søndergaard Taylor Thompson Walker Williams Wright "
    "Yamamoto Zhang"
).split()
US_AREA_CODES = ("202", "212", "303", "305", "312", "404", "415", "512", "617", "206")
ZIPS = (
    "02134 02139 01002 03755 04101 05401 06511 07030 08540 10001 11201 "
    "20001 30301 33101 55401 60614 73301 78701 80202 94110 97205 98101"
).split()
PLANS = ("free", "pro", "gold")
PLAN_WEIGHTS = (60, 30, 10)
FIRST_SIGNUP = datetime.date(2024, 1, 1)
MISSING_PHONE = 3
MISSING_FIRST_NAME = 2
COMMA_ROW = 42  # this contact's last name holds a comma, so the CSV quotes it


def make_rows(seed: int = SEED) -> list[dict[str, str]]:
    """The sample contacts, every value a string."""
    rng = random.Random(seed)
    rows = [_contact(rng, number) for number in range(1, ROWS + 1)]

    blanks = rng.sample(range(ROWS), MISSING_PHONE + MISSING_FIRST_NAME)
    for index in blanks[:MISSING_PHONE]:
        rows[index]["phone"] = ""
    for index in blanks[MISSING_PHONE:]:
        rows[index]["first_name"] = ""
    return rows


def _contact(rng: random.Random, number: int) -> dict[str, str]:
    first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
    if number == COMMA_ROW:
        last = "Hale, Jr."
    domain = "example.com" if rng.random() < 0.7 else "example.org"
    signup = FIRST_SIGNUP + datetime.timedelta(days=rng.randrange(366))
    return {
        "contact_id": f"C{number:05d}",
        "first_name": first,
        "last_name": last,
        "phone": _phone(rng),
        "zip": rng.choice(ZIPS),
        "email": f"{_ascii(first)}.{_ascii(last)}{number}@{domain}",
        "plan": rng.choices(PLANS, PLAN_WEIGHTS)[0],
        "signup_date": signup.isoformat(),
    }


def _phone(rng: random.Random) -> str:
    draw = rng.random()
    if draw < 0.8:
        return f"+1{rng.choice(US_AREA_CODES)}55501{rng.randrange(100):02d}"
    if draw < 0.92:
        return f"+447700900{rng.randrange(1000):03d}"
    return f"+61491570{rng.randrange(110, 160):03d}"


def _ascii(name: str) -> str:
    """A name as lower-case ASCII letters, for an email address."""
    folded = unicodedata.normalize("NFKD", name.replace("Ł", "L").replace("ø", "o"))
    return "".join(c for c in folded if c.isascii() and c.isalpha()).lower()


def write_csv(rows: list[dict[str, str]], path: Path) -> None:
    """Write the rows as UTF-8 CSV, quoting only where needed."""
    with path.open("w", encoding="utf-8", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def write_jsonl(rows: list[dict[str, str]], path: Path) -> None:
    """Write the rows as JSON lines, keys in column order."""
    with path.open("w", encoding="utf-8", newline="") as file:
        for row in rows:
            file.write(json.dumps(row, ensure_ascii=False) + "\n")


def write_parquet(rows: list[dict[str, str]], path: Path) -> None:
    """Write the rows as Parquet with every column a string."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([(name, pa.string()) for name in COLUMNS])
    table = pa.Table.from_pylist(rows, schema=schema)
    pq.write_table(table, path, compression="snappy")


def main() -> None:
    """Write the three files into --out, by default beside this script."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent)
    out = parser.parse_args().out
    out.mkdir(parents=True, exist_ok=True)

    rows = make_rows()
    write_csv(rows, out / "contacts.csv")
    write_jsonl(rows, out / "contacts.jsonl")
    write_parquet(rows, out / "contacts.parquet")


if __name__ == "__main__":
    main()
