"""The checkpoint: what a run belongs to, what is done and what is in doubt.

The output file is the record of finished rows. Beside it, the checkpoint
(``OUTPUT.checkpoint``) is a small append-only text file:

    {"batchrun_checkpoint": 1, "run_id": ..., "identity": {...}}   header
    d OUT ROW      ROW is about to be sent; the output was OUT bytes long
    u ROW          ROW's last attempt was answered and did not execute
    w {...}        watermark: every row up to "row" has its record

A row with a ``d`` line and neither a later ``u`` nor a record at or past
byte OUT of the output was sent but never answered: it is *in doubt*.
The watermark also names where reading may resume in the input (row, line,
byte offset) and in the output (``scan_from``: the first record that may
belong to a row past the watermark), so a resume never re-reads what is done.
Rows are identified by number, or by key (a JSON string) with --key-column.

Lines are written with single unbuffered appends, so a killed process leaves
at most one torn last line, which loading ignores. The file is rewritten
(atomically) when it grows past COMPACT_BYTES, keeping only what is still
needed.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from dataclasses import asdict, dataclass, field
from typing import Any

from .errors import CheckpointError, OutputError

FORMAT_VERSION = 1
SUFFIX = ".checkpoint"
COMPACT_BYTES = 8 * 1024 * 1024
SAMPLE_BYTES = 64 * 1024
SAMPLES = 16

Ident = int | str


def fingerprint(path: str) -> dict[str, Any] | None:
    """A cheap fingerprint of the input: its size and a hash of sampled blocks.

    Reads the first and last MiB and SAMPLES blocks spread in between, so it
    costs the same for a 10 GB file as for a 10 MB one. A change that keeps
    the size and touches none of the sampled bytes goes unnoticed.
    """
    if path == "-":
        return None
    digest = hashlib.sha256()
    size = os.path.getsize(path)
    with open(path, "rb") as file:
        digest.update(file.read(1024 * 1024))
        for index in range(1, SAMPLES + 1):
            file.seek(size * index // (SAMPLES + 1))
            digest.update(file.read(SAMPLE_BYTES))
        file.seek(max(0, size - 1024 * 1024))
        digest.update(file.read(1024 * 1024))
    return {"size": size, "sha256": digest.hexdigest()}


@dataclass
class Watermark:
    """Every row numbered up to ``row`` has a record in the output."""

    row: int = 0
    line: int = 0
    offset: int | None = None
    scan_from: int = 0
    out_end: int = 0
    counts: dict[str, int] = field(default_factory=dict)


@dataclass
class LedgerState:
    """What a checkpoint file says, replayed."""

    run_id: str
    identity: dict[str, Any]
    watermark: Watermark
    outstanding: dict[Ident, int]


def _encode_ident(ident: Ident) -> str:
    return str(ident) if isinstance(ident, int) else json.dumps(ident)


def _decode_ident(text: str) -> Ident:
    return json.loads(text) if text.startswith('"') else int(text)


def load(path: str) -> LedgerState:
    """Replay a checkpoint file; raise CheckpointError if it is not one."""
    try:
        with open(path, "rb") as file:
            header = _parse_header(path, file.readline())
            state = LedgerState(header["run_id"], header["identity"], Watermark(), {})
            for number, raw in enumerate(file, start=2):
                if raw.endswith(b"\n"):
                    try:
                        _replay(state, raw.decode("utf-8"))
                    except (ValueError, TypeError) as exc:
                        raise CheckpointError(
                            f"{path}: line {number} is damaged; pass --restart"
                        ) from exc
    except OSError as exc:
        message = f"{path}: cannot read the checkpoint ({exc.strerror})"
        raise CheckpointError(message) from None
    return state


def _parse_header(path: str, raw: bytes) -> dict[str, Any]:
    try:
        header = json.loads(raw)
        assert header["batchrun_checkpoint"] == FORMAT_VERSION
        assert isinstance(header["run_id"], str) and isinstance(
            header["identity"], dict
        )
    except (ValueError, KeyError, TypeError, AssertionError):
        raise CheckpointError(
            f"{path}: not a batchrun checkpoint of this version; move it away or "
            "pass --restart"
        ) from None
    return dict(header)


def _replay(state: LedgerState, line: str) -> None:
    kind, _, rest = line.rstrip("\n").partition(" ")
    if kind == "d":
        out, _, ident = rest.partition(" ")
        state.outstanding[_decode_ident(ident)] = int(out)
    elif kind == "u":
        state.outstanding.pop(_decode_ident(rest), None)
    elif kind == "w":
        before = state.watermark.row
        state.watermark = Watermark(**json.loads(rest))
        done = state.watermark.row
        if done > before:
            # Rows the watermark just passed have their records. Rows at or
            # below the old watermark dispatched again later (--retry-failed)
            # stay outstanding until the output shows their new record.
            for passed in [
                i
                for i in state.outstanding
                if isinstance(i, int) and before < i <= done
            ]:
                del state.outstanding[passed]


class Ledger:
    """Appends to a checkpoint file and tracks the rows still outstanding."""

    def __init__(self, path: str, run_id: str, identity: dict[str, Any]) -> None:
        self.path = path
        self.run_id = run_id
        self.identity = identity
        self.outstanding: dict[Ident, int] = {}
        self.watermark = Watermark()
        self._fd: int | None = None
        self._size = 0

    @classmethod
    def create(
        cls, path: str, identity: dict[str, Any], watermark: Watermark
    ) -> Ledger:
        """Start a new checkpoint for a new run."""
        ledger = cls(path, secrets.token_hex(8), identity)
        ledger.watermark = watermark
        ledger._rewrite()
        return ledger

    @classmethod
    def resume(cls, path: str, state: LedgerState) -> Ledger:
        """Continue an existing checkpoint, compacted to what is still needed."""
        ledger = cls(path, state.run_id, state.identity)
        ledger.watermark = state.watermark
        ledger.outstanding = dict(state.outstanding)
        ledger._rewrite()
        return ledger

    def dispatched(self, ident: Ident, out_offset: int) -> None:
        """Record that ``ident`` is about to be sent."""
        self.outstanding[ident] = out_offset
        self._append(f"d {out_offset} {_encode_ident(ident)}\n")

    def released(self, ident: Ident) -> None:
        """Record that ``ident`` was answered without executing."""
        if self.outstanding.pop(ident, None) is not None:
            self._append(f"u {_encode_ident(ident)}\n")

    def recorded(self, ident: Ident) -> None:
        """Forget ``ident``: its record is in the output now."""
        self.outstanding.pop(ident, None)

    def advance(self, watermark: Watermark) -> None:
        """Record a new watermark; compact the file when it has grown large."""
        self.watermark = watermark
        self._append("w " + json.dumps(asdict(watermark)) + "\n")
        if self._size > COMPACT_BYTES:
            self._rewrite()

    def compact(self) -> None:
        """Rewrite the file with only what is still needed."""
        self._rewrite()

    def close(self) -> None:
        """Close the file; safe to call twice."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _rewrite(self) -> None:
        header = {
            "batchrun_checkpoint": FORMAT_VERSION,
            "run_id": self.run_id,
            "identity": self.identity,
        }
        lines = [json.dumps(header) + "\n"]
        lines.append("w " + json.dumps(asdict(self.watermark)) + "\n")
        for ident, out in self.outstanding.items():
            lines.append(f"d {out} {_encode_ident(ident)}\n")
        temporary = self.path + ".tmp"
        try:
            with open(temporary, "w", encoding="utf-8") as file:
                file.write("".join(lines))
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, self.path)
        except OSError as exc:
            raise OutputError(
                f"{self.path}: cannot write the checkpoint ({exc.strerror}); free "
                "space or fix permissions, then run the same command to resume"
            ) from exc
        self.close()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        self._size = os.fstat(self._fd).st_size

    def _append(self, line: str) -> None:
        if self._fd is None:
            raise OutputError(f"{self.path}: the checkpoint is not open")
        data = line.encode("utf-8")
        try:
            written = os.write(self._fd, data)
            while written < len(data):
                written += os.write(self._fd, data[written:])
        except OSError as exc:
            os.ftruncate(self._fd, self._size)
            raise OutputError(
                f"{self.path}: cannot write the checkpoint ({exc.strerror}); free "
                "space or fix permissions, then run the same command to resume"
            ) from exc
        self._size += len(data)


def describe_change(old: dict[str, Any], new: dict[str, Any]) -> str | None:
    """Say in words what differs between two run identities, or None."""
    labels = {
        "input": "the input file's content",
        "base_url": "--base-url",
        "org": "--org",
        "flow": "--flow",
        "mapping": "the variable mapping (--columns, --rename, --set, --empty, ...)",
        "key_column": "--key-column",
        "fields": "the output columns (--include-input)",
        "source": "the input reading options (--format, --encoding, --delimiter, "
        "--sheet or --offset)",
    }
    changed = [
        label for name, label in labels.items() if old.get(name) != new.get(name)
    ]
    return ", ".join(changed) if changed else None
