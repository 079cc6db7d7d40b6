"""What every output writer provides: encode records, append them, scan them back.

The output file is the durable record of a run: one record per input row,
appended as results arrive. Resuming reads it back (from a byte offset the
checkpoint names), so every format here can both write and scan records, and
cut a torn last record away.
"""

from __future__ import annotations

import abc
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import CheckpointError, OutputError

RESULT_FIELDS = (
    "row",
    "status",
    "http_status",
    "session_id",
    "error",
    "attempts",
    "resent",
    "started_at",
    "latency_ms",
    "row_id",
)

Record = Sequence[Any]


@dataclass(frozen=True, slots=True)
class ScannedRecord:
    """A record read back from the output: where it is and what it says."""

    offset: int
    end: int
    row: int
    status: str
    fields: dict[str, Any]


class Sink(abc.ABC):
    """An append-only record file with a header of ``fields``."""

    extension = ""

    def __init__(self, path: str, fields: Sequence[str]) -> None:
        self.path = path
        self.fields = tuple(fields)
        self._fd: int | None = None
        self.end = 0

    @abc.abstractmethod
    def header(self) -> bytes:
        """The bytes a new file starts with (may be empty)."""

    @abc.abstractmethod
    def encode(self, records: Sequence[Record]) -> bytes:
        """Encode records in ``fields`` order as bytes to append."""

    @abc.abstractmethod
    def scan(self, start: int) -> Iterator[ScannedRecord]:
        """Yield complete records from byte ``start`` on; stop at a torn tail."""

    @abc.abstractmethod
    def read_fields(self) -> tuple[str, ...] | None:
        """The field names stored in an existing file, or None if it has none."""

    def stored_fields(self) -> tuple[str, ...]:
        """The field names as the header stores them."""
        return self.fields

    def create(self) -> None:
        """Start a new, empty output (header only)."""
        self._open(os.O_CREAT | os.O_TRUNC)
        self.append(self.header())

    def reopen(self, end: int) -> None:
        """Reopen an existing output for appending, cutting anything past ``end``."""
        stored = self.read_fields()
        if stored != self.stored_fields():
            raise CheckpointError(
                f"{self.path}: its columns differ from this run's "
                f"({', '.join(stored or ())} vs {', '.join(self.fields)}); "
                "run again with the same options or pass --restart"
            )
        self._open(0)
        os.ftruncate(self._fd_or_fail(), end)
        self.end = end

    def append(self, data: bytes) -> int:
        """Append bytes in one write; return the new end offset."""
        if not data:
            return self.end
        fd = self._fd_or_fail()
        try:
            written = os.write(fd, data)
            while written < len(data):
                written += os.write(fd, data[written:])
        except OSError as exc:
            os.ftruncate(fd, self.end)  # never leave a torn record behind
            raise OutputError(
                f"{self.path}: cannot write the output ({exc.strerror}); free space "
                "or fix permissions, then run the same command again to resume"
            ) from exc
        self.end += len(data)
        return self.end

    def sync(self) -> None:
        """Ask the OS to put what was appended on the disk."""
        if self._fd is not None:
            os.fsync(self._fd)

    def close(self) -> None:
        """Close the file; safe to call twice."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def finish(self) -> None:  # noqa: B027
        """Called once when the run is complete (formats written at the end)."""

    def _open(self, flags: int) -> None:
        try:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | flags, 0o644)
        except OSError as exc:
            raise OutputError(
                f"{self.path}: cannot open the output for writing ({exc.strerror}); "
                "check the directory exists and is writable"
            ) from exc
        self.end = os.fstat(self._fd).st_size

    def _fd_or_fail(self) -> int:
        if self._fd is None:
            raise OutputError(f"{self.path}: the output is not open")
        return self._fd
