"""The checkpoint: input fingerprints, the ledger's replay, compaction, identity."""

from __future__ import annotations

import errno
import os
import random
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from batchrun import checkpoint
from batchrun.checkpoint import (
    SAMPLE_BYTES,
    SAMPLES,
    Ledger,
    Watermark,
    describe_change,
    fingerprint,
    load,
)
from batchrun.errors import CheckpointError, OutputError

MIB = 1024 * 1024
IDENTITY: dict[str, Any] = {
    "input": {"size": 10, "sha256": "ab" * 32},
    "base_url": "https://gw.example.com",
    "org": "demo-org",
    "flow": "welcome",
    "mapping": {"columns": None, "rename": [], "empty": "text"},
    "key_column": None,
    "fields": ["row", "status"],
    "source": {"format": "csv", "encoding": None, "offset": 0},
}


def mark(row: int, **changes: Any) -> Watermark:
    values: dict[str, Any] = {
        "row": row,
        "line": row + 1,
        "offset": 100 * row,
        "scan_from": 50 * row,
        "out_end": 50 * row,
        "counts": {"succeeded": row},
    }
    values.update(changes)
    return Watermark(**values)


def new_ledger(tmp_path: Path, watermark: Watermark | None = None) -> Ledger:
    path = str(tmp_path / "out.csv.checkpoint")
    return Ledger.create(path, IDENTITY, watermark or Watermark())


# ------------------------------------------------------------- fingerprint


def write_random(path: Path, size: int, seed: int = 7) -> bytearray:
    data = bytearray(random.Random(seed).randbytes(size))
    path.write_bytes(data)
    return data


def flip(path: Path, position: int) -> None:
    with open(path, "r+b") as file:
        file.seek(position)
        byte = file.read(1)
        file.seek(position)
        file.write(bytes([byte[0] ^ 0xFF]))


def sampled(position: int, size: int) -> bool:
    """True when fingerprint() reads the byte at ``position``."""
    if position < MIB or position >= size - MIB:
        return True
    starts = (size * index // (SAMPLES + 1) for index in range(1, SAMPLES + 1))
    return any(start <= position < start + SAMPLE_BYTES for start in starts)


SIZE = 5 * MIB
SAMPLE_POSITIONS = [SIZE * index // (SAMPLES + 1) for index in range(1, SAMPLES + 1)]


def test_fingerprint_is_stable_for_the_same_content(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    write_random(path, SIZE)

    first = fingerprint(str(path))
    os.utime(path, (0, 0))  # a new modification time is no change

    assert first == fingerprint(str(path))
    assert first is not None and first["size"] == SIZE
    assert len(first["sha256"]) == 64


@pytest.mark.parametrize(
    "position",
    [0, 1, MIB - 1, SIZE - MIB, SIZE - 1, *SAMPLE_POSITIONS, SAMPLE_POSITIONS[8] + 999],
)
def test_fingerprint_changes_when_a_read_byte_changes(
    tmp_path: Path, position: int
) -> None:
    path = tmp_path / "in.csv"
    write_random(path, SIZE)
    before = fingerprint(str(path))

    flip(path, position)

    assert sampled(position, SIZE)
    assert fingerprint(str(path)) != before


def test_fingerprint_misses_a_change_between_samples(tmp_path: Path) -> None:
    # The documented limit: same size, no sampled byte touched.
    path = tmp_path / "in.csv"
    write_random(path, SIZE)
    before = fingerprint(str(path))
    position = SAMPLE_POSITIONS[8] + SAMPLE_BYTES + 10

    flip(path, position)

    assert not sampled(position, SIZE)
    assert fingerprint(str(path)) == before


@pytest.mark.parametrize("change", [+1, -1, +SIZE])
def test_fingerprint_changes_with_the_size(tmp_path: Path, change: int) -> None:
    path = tmp_path / "in.csv"
    write_random(path, SIZE)
    before = fingerprint(str(path))

    os.truncate(path, SIZE + change)

    after = fingerprint(str(path))
    assert after is not None and before is not None
    assert after["size"] == SIZE + change
    assert after != before


def test_fingerprint_of_a_small_file_covers_every_byte(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    write_random(path, 3000)
    seen = {str(fingerprint(str(path)))}

    for position in range(0, 3000, 97):
        flip(path, position)
        seen.add(str(fingerprint(str(path))))
        flip(path, position)

    assert len(seen) == 1 + len(range(0, 3000, 97))


def test_fingerprint_of_an_empty_file_and_of_stdin(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_bytes(b"")

    assert fingerprint(str(path)) == {
        "size": 0,
        "sha256": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    }
    assert fingerprint("-") is None


def test_fingerprint_is_fast_for_a_big_sparse_file(tmp_path: Path) -> None:
    size = 2 * 1024 * MIB
    if shutil.disk_usage(tmp_path).free < 64 * MIB:
        pytest.skip("not enough free space in tmp for a sparse file")
    path = tmp_path / "big.csv"
    with open(path, "wb") as file:
        file.truncate(size)
    if os.stat(path).st_blocks * 512 > 64 * MIB:
        pytest.skip("this filesystem does not keep sparse files sparse")

    started = time.perf_counter()
    result = fingerprint(str(path))
    elapsed = time.perf_counter() - started

    assert result is not None and result["size"] == size
    assert elapsed < 1.0


# ------------------------------------------------------------------ ledger


def test_create_writes_a_header_and_the_watermark(tmp_path: Path) -> None:
    ledger = new_ledger(tmp_path, mark(0, offset=None))
    ledger.close()

    state = load(ledger.path)

    assert state.run_id == ledger.run_id
    assert len(ledger.run_id) == 16
    assert state.identity == IDENTITY
    assert state.watermark == mark(0, offset=None)
    assert state.outstanding == {}


def test_each_run_gets_its_own_id(tmp_path: Path) -> None:
    first = new_ledger(tmp_path)
    second = Ledger.create(str(tmp_path / "other.checkpoint"), IDENTITY, Watermark())

    assert first.run_id != second.run_id
    first.close()
    second.close()


def test_load_replays_dispatches_releases_and_watermarks(tmp_path: Path) -> None:
    ledger = new_ledger(tmp_path)

    ledger.dispatched(1, 10)
    ledger.dispatched(2, 10)
    ledger.dispatched(3, 25)
    ledger.released(2)
    ledger.recorded(1)
    ledger.advance(mark(1))
    ledger.dispatched('a "key" ü', 40)
    ledger.dispatched(4, 40)
    ledger.close()

    state = load(ledger.path)

    assert state.watermark == mark(1)
    assert state.outstanding == {3: 25, 'a "key" ü': 40, 4: 40}
    assert state.outstanding == ledger.outstanding
    assert state.run_id == ledger.run_id


def test_a_dispatch_again_replaces_the_output_offset(tmp_path: Path) -> None:
    ledger = new_ledger(tmp_path)

    ledger.dispatched(5, 10)
    ledger.dispatched(5, 90)
    ledger.close()

    assert load(ledger.path).outstanding == {5: 90}


def test_released_without_dispatch_writes_nothing(tmp_path: Path) -> None:
    ledger = new_ledger(tmp_path)
    size = os.path.getsize(ledger.path)

    ledger.released(9)

    assert os.path.getsize(ledger.path) == size
    ledger.close()


def test_rows_passed_by_the_watermark_drop_out_of_outstanding(tmp_path: Path) -> None:
    ledger = new_ledger(tmp_path)
    for row in (1, 2, 3, 5, 6):
        ledger.dispatched(row, 10 * row)
    ledger.dispatched("k", 70)

    ledger.advance(mark(5))
    ledger.close()

    assert load(ledger.path).outstanding == {6: 60, "k": 70}


def test_rows_dispatched_again_below_an_unchanged_watermark_stay(
    tmp_path: Path,
) -> None:
    ledger = new_ledger(tmp_path, mark(4))
    ledger.dispatched(2, 200)  # --retry-failed sends row 2 again
    ledger.dispatched(4, 210)
    ledger.advance(mark(4))  # the watermark does not move
    ledger.dispatched(6, 220)
    ledger.advance(mark(7))  # passes row 6 only
    ledger.close()

    state = load(ledger.path)

    assert state.watermark == mark(7)
    assert state.outstanding == {2: 200, 4: 210}


def test_torn_last_line_is_ignored(tmp_path: Path) -> None:
    ledger = new_ledger(tmp_path)
    ledger.dispatched(1, 10)
    ledger.close()
    with open(ledger.path, "ab") as file:
        file.write(b'w {"row": 9, "line": 1')

    state = load(ledger.path)

    assert state.outstanding == {1: 10}
    assert state.watermark == Watermark()


@pytest.mark.parametrize("torn", [b"d 12", b"d", b"u 1", b"\xe2\x82"])
def test_torn_last_line_of_any_kind_is_ignored(tmp_path: Path, torn: bytes) -> None:
    ledger = new_ledger(tmp_path)
    ledger.dispatched(1, 10)
    ledger.close()
    with open(ledger.path, "ab") as file:
        file.write(torn)

    assert load(ledger.path).outstanding == {1: 10}


def test_lines_of_an_unknown_kind_are_skipped(tmp_path: Path) -> None:
    ledger = new_ledger(tmp_path)
    ledger.dispatched(1, 10)
    ledger.close()
    with open(ledger.path, "ab") as file:
        file.write(b"x 2\n\n")

    assert load(ledger.path).outstanding == {1: 10}


def test_resume_compacts_to_the_state(tmp_path: Path) -> None:
    ledger = new_ledger(tmp_path)
    for row in range(1, 50):
        ledger.dispatched(row, row)
        ledger.recorded(row)
        ledger.advance(mark(row))
    ledger.dispatched(50, 500)
    ledger.close()
    big = os.path.getsize(ledger.path)

    resumed = Ledger.resume(ledger.path, load(ledger.path))
    resumed.dispatched(51, 510)
    resumed.close()

    state = load(ledger.path)
    assert os.path.getsize(ledger.path) < big / 10
    assert state.run_id == ledger.run_id
    assert state.watermark == mark(49)
    assert state.outstanding == {50: 500, 51: 510}
    assert len(Path(ledger.path).read_text().splitlines()) == 4


def test_compaction_keeps_the_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(checkpoint, "COMPACT_BYTES", 400)
    ledger = new_ledger(tmp_path)
    sizes = []

    for row in range(1, 200):
        ledger.dispatched(row, row * 3)
        if row % 50:  # rows 50, 100 and 150 stay in doubt and hold the mark
            ledger.recorded(row)
            ledger.advance(mark(min(row, 49)))
        sizes.append(os.path.getsize(ledger.path))
    ledger.dispatched("k", 7)
    ledger.close()

    state = load(ledger.path)

    assert max(sizes) < 400 + 200
    assert state.watermark == mark(49)
    assert state.outstanding == {50: 150, 100: 300, 150: 450, "k": 7}
    assert state.outstanding == ledger.outstanding
    assert not os.path.exists(ledger.path + ".tmp")


def test_compact_keeps_the_state(tmp_path: Path) -> None:
    ledger = new_ledger(tmp_path, mark(3))
    ledger.dispatched(2, 20)
    ledger.dispatched(5, 50)
    ledger.released(5)
    ledger.dispatched(6, 60)

    ledger.compact()
    ledger.dispatched(7, 70)
    ledger.close()

    state = load(ledger.path)
    assert state.outstanding == {2: 20, 6: 60, 7: 70}
    assert state.watermark == mark(3)


def test_close_twice_is_harmless_and_appending_after_is_an_error(
    tmp_path: Path,
) -> None:
    ledger = new_ledger(tmp_path)
    ledger.close()
    ledger.close()

    with pytest.raises(OutputError) as caught:
        ledger.dispatched(1, 0)

    assert str(caught.value) == f"{ledger.path}: the checkpoint is not open"


def test_append_on_a_full_disk_is_an_output_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = new_ledger(tmp_path)
    real_write = os.write

    def full_disk(fd: int, data: bytes) -> int:
        if fd == ledger._fd:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", full_disk)

    with pytest.raises(OutputError) as caught:
        ledger.advance(mark(1))

    assert str(caught.value) == (
        f"{ledger.path}: cannot write the checkpoint (No space left on device); "
        "free space or fix permissions, then run the same command to resume"
    )
    monkeypatch.undo()
    ledger.close()


def test_rewrite_on_a_full_disk_is_an_output_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = new_ledger(tmp_path)

    def no_space(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", no_space)

    with pytest.raises(OutputError, match=r"cannot write the checkpoint \(No space"):
        ledger.compact()
    monkeypatch.undo()
    ledger.close()
    assert load(ledger.path).run_id == ledger.run_id


def test_short_write_is_completed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = new_ledger(tmp_path)
    real_write = os.write
    calls = []

    def short_once(fd: int, data: bytes) -> int:
        calls.append(data)
        if fd == ledger._fd and len(calls) == 1:
            return real_write(fd, data[:3])
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", short_once)
    ledger.dispatched(5, 100)
    ledger.dispatched(6, 200)
    monkeypatch.undo()
    ledger.close()

    assert load(ledger.path).outstanding == {5: 100, 6: 200}


@pytest.mark.parametrize(
    "damaged",
    [
        b"d x 5\n",
        b"d 10 \n",
        b"u 1d\n",
        b"w {not json\n",
        b'w {"rows": 1}\n',
        b"\xff\n",
    ],
)
def test_a_damaged_line_before_the_end_is_a_checkpoint_error(
    tmp_path: Path, damaged: bytes
) -> None:
    ledger = new_ledger(tmp_path)
    ledger.close()
    with open(ledger.path, "ab") as file:
        file.write(damaged + b"d 10 1\n")

    with pytest.raises(CheckpointError):
        load(ledger.path)


# ---------------------------------------------------- not a checkpoint


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"row,status\n1,succeeded\n",
        b"\x00\xff\xfe binary",
        b"[1, 2]\n",
        b'"text"\n',
        b'{"batchrun_checkpoint": 2, "run_id": "r", "identity": {}}\n',
        b'{"batchrun_checkpoint": 1, "identity": {}}\n',
        b'{"batchrun_checkpoint": 1, "run_id": 5, "identity": {}}\n',
        b'{"batchrun_checkpoint": 1, "run_id": "r", "identity": []}\n',
        b'{"batchrun_checkpoint": 1, "run_id": "r", "ident',
    ],
)
def test_load_rejects_what_is_not_a_checkpoint(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "out.csv.checkpoint"
    path.write_bytes(content)

    with pytest.raises(CheckpointError) as caught:
        load(str(path))

    assert str(caught.value) == (
        f"{path}: not a batchrun checkpoint of this version; move it away or "
        "pass --restart"
    )


def test_load_of_a_missing_file_is_a_checkpoint_error(tmp_path: Path) -> None:
    path = tmp_path / "gone.checkpoint"

    with pytest.raises(CheckpointError) as caught:
        load(str(path))

    assert str(caught.value) == (
        f"{path}: cannot read the checkpoint (No such file or directory)"
    )


def test_load_of_a_minimal_header_has_an_empty_state(tmp_path: Path) -> None:
    path = tmp_path / "out.csv.checkpoint"
    path.write_bytes(b'{"batchrun_checkpoint": 1, "run_id": "r", "identity": {}}\n')

    state = load(str(path))

    assert (state.run_id, state.identity, state.outstanding) == ("r", {}, {})
    assert asdict(state.watermark) == asdict(Watermark())


# --------------------------------------------------------- describe_change


def test_describe_change_is_none_for_the_same_identity() -> None:
    assert describe_change(IDENTITY, dict(IDENTITY)) is None


@pytest.mark.parametrize(
    ("changes", "described"),
    [
        ({"input": {"size": 11, "sha256": "cd"}}, "the input file's content"),
        ({"base_url": "https://other.example.com"}, "--base-url"),
        ({"org": "o2"}, "--org"),
        ({"flow": "f2"}, "--flow"),
        (
            {"mapping": {"columns": ["a"]}},
            "the variable mapping (--columns, --rename, --set, --empty, ...)",
        ),
        ({"key_column": "id"}, "--key-column"),
        ({"fields": ["row"]}, "the output columns (--include-input)"),
        (
            {"source": {"format": "tsv"}},
            "the input reading options (--format, --encoding, --delimiter, "
            "--sheet or --offset)",
        ),
        (
            {"org": "o2", "base_url": "https://x", "flow": "f"},
            "--base-url, --org, --flow",
        ),
        ({"unrelated": 1}, None),
    ],
)
def test_describe_change_names_the_changed_parts(
    changes: dict[str, Any], described: str | None
) -> None:
    assert describe_change(IDENTITY, {**IDENTITY, **changes}) == described


def test_describe_change_counts_a_missing_part_as_changed() -> None:
    old = {key: value for key, value in IDENTITY.items() if key != "flow"}

    assert describe_change(old, IDENTITY) == "--flow"
