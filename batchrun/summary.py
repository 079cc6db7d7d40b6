"""What a run reports: the summary it returns and the events it emits."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .errors import EXIT_OK


@dataclass
class Summary:
    """What a run did; the CLI prints it and the Python API returns it."""

    output: str
    read: int = 0
    succeeded: int = 0
    failed: int = 0
    invalid: int = 0
    unknown: int = 0
    skipped_done: int = 0
    in_doubt: int = 0
    resent: int = 0
    retries: int = 0
    lost_answers: int = 0
    requests: int = 0
    elapsed: float = 0.0
    totals: dict[str, int] = field(default_factory=dict)
    complete: bool = False
    interrupted: bool = False
    aborted: str | None = None
    exit_code: int = EXIT_OK
    resumed: bool = False
    failed_out: str | None = None
    failed_rows: int = 0

    @property
    def processed(self) -> int:
        """Rows this session recorded."""
        return self.succeeded + self.failed + self.invalid + self.unknown

    @property
    def rows_per_second(self) -> float:
        """This session's recorded rows per second."""
        return self.processed / self.elapsed if self.elapsed > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        """A JSON-safe view, for --summary-json and logs."""
        return {
            "output": self.output,
            "read": self.read,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "invalid": self.invalid,
            "unknown": self.unknown,
            "skipped_done": self.skipped_done,
            "in_doubt": self.in_doubt,
            "resent": self.resent,
            "retries": self.retries,
            "lost_answers": self.lost_answers,
            "requests": self.requests,
            "elapsed_s": round(self.elapsed, 3),
            "rows_per_second": round(self.rows_per_second, 1),
            "totals": dict(self.totals),
            "complete": self.complete,
            "interrupted": self.interrupted,
            "aborted": self.aborted,
            "exit_code": self.exit_code,
            "failed_out": self.failed_out,
            "failed_rows": self.failed_rows,
        }


class Events:
    """Hooks the runner calls; the CLI and the Python API override them."""

    def start(self, done: int, total: int | None) -> None:
        """The run is about to send; ``done`` rows were finished before."""

    def progress(self, counts: dict[str, int]) -> None:
        """Records reached the disk; ``counts`` are this session's so far."""

    def notice(self, message: str) -> None:
        """A one-line message for the person running the batch."""

    def info(self, message: str) -> None:
        """A one-line detail worth showing unless asked to be quiet."""

    def close(self) -> None:
        """The run is over."""
