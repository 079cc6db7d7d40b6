"""The Python API: run_batch and read_results against the real local service."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import batchrun
from batchrun.errors import CheckpointError, UsageError

TOKEN = "tok-api-7f3e9b2c1d"


def write_input(path: Path) -> Path:
    path.write_text(
        "first_name,phone,zip\nAda,+15550100,02134\nBob,,10001\nCy,+15550102,00501\n",
        encoding="utf-8",
    )
    return path


def test_run_batch_returns_a_summary_and_read_results_a_frame(
    serve: Any, tmp_path: Path
) -> None:
    flows = tmp_path / "flows.json"
    flows.write_text(
        '{"flows": [{"org": "o", "flow": "f", "required": ["phone"]}]}',
        encoding="utf-8",
    )
    service = serve("--flows", str(flows))
    output = tmp_path / "out.csv"

    summary = batchrun.run_batch(
        str(write_input(tmp_path / "in.csv")),
        str(output),
        base_url=service.url,
        org="o",
        flow="f",
        token=TOKEN,
        include_input=True,
        set={"campaign": "spring"},
    )
    frame = batchrun.read_results(str(output))
    service.stop()
    sent = sorted(r["variables"]["first_name"] for r in service.records())

    assert (summary.succeeded, summary.failed, summary.exit_code) == (2, 1, 1)
    assert summary.complete and not summary.interrupted
    assert list(frame["row"]) == [1, 2, 3]
    assert list(frame["status"]) == ["succeeded", "failed", "succeeded"]
    assert list(frame["zip"]) == ["02134", "10001", "00501"]  # text kept
    assert sent == ["Ada", "Bob", "Cy"]
    assert all(r["variables"]["campaign"] == "spring" for r in service.records())
    assert summary.failed_out == str(tmp_path / "out.failed.csv")


def test_run_batch_resumes_and_refuses_a_different_flow(
    serve: Any, tmp_path: Path
) -> None:
    service = serve()
    input_path = str(write_input(tmp_path / "in.csv"))
    output = str(tmp_path / "out.jsonl")
    common = {"base_url": service.url, "org": "o", "token": TOKEN}

    first = batchrun.run_batch(input_path, output, flow="f", **common)
    again = batchrun.run_batch(input_path, output, flow="f", **common)
    with pytest.raises(CheckpointError, match="--flow changed"):
        batchrun.run_batch(input_path, output, flow="g", **common)

    assert first.succeeded == 3 and first.exit_code == 0
    assert again.processed == 0 and again.resumed


def test_run_batch_needs_a_token(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.delenv("BATCHRUN_TOKEN", raising=False)
    with pytest.raises(UsageError, match="no token"):
        batchrun.run_batch(
            str(write_input(tmp_path / "in.csv")),
            str(tmp_path / "out.csv"),
            base_url="http://127.0.0.1:9",
            org="o",
            flow="f",
        )
