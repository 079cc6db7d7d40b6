"""`make demo` runs: the sample contacts through a local service, end to end."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_demo_runs_the_sample_contacts(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "sample_data" / "run_demo.py"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    with open(tmp_path / "demo-results.csv", encoding="utf-8", newline="") as file:
        records = list(csv.DictReader(file))

    assert result.returncode == 0, result.stderr
    assert "300 rows read: 295 succeeded, 5 failed, 0 invalid" in result.stderr
    assert "demo: results in demo-results.csv" in result.stdout
    assert sorted(int(r["row"]) for r in records) == list(range(1, 301))
    assert {r["status"] for r in records} == {"succeeded", "failed"}
    assert (tmp_path / "demo-results.failed.csv").exists()
