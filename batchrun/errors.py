"""Every error batchrun raises, each knowing the exit code it ends a run with.

    BatchrunError                 base class; exit code 1
    ├── UsageError                a bad option or option value; exit 2
    ├── InputError                the input file cannot be used; exit 2
    ├── CheckpointError           the checkpoint does not fit this run; exit 2
    ├── OutputError               the output cannot be written; exit 3
    └── AbortError                the run stopped early (bad token, unknown
                                  flow, every row failing); exit 3

Messages are single sentences a person can act on: what failed, where, and
the option or fix. They never contain the bearer token.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_ROWS_FAILED = 1
EXIT_USAGE = 2
EXIT_ABORTED = 3
EXIT_INTERRUPTED = 130


class BatchrunError(Exception):
    """Base class of every error batchrun raises on purpose."""

    exit_code = EXIT_ROWS_FAILED

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class UsageError(BatchrunError):
    """An option or option value is wrong."""

    exit_code = EXIT_USAGE


class InputError(BatchrunError):
    """The input file is missing, unreadable or malformed as a whole."""

    exit_code = EXIT_USAGE


class CheckpointError(BatchrunError):
    """An existing checkpoint belongs to a different run or cannot be trusted."""

    exit_code = EXIT_USAGE


class OutputError(BatchrunError):
    """The output or checkpoint cannot be written (disk full, no permission)."""

    exit_code = EXIT_ABORTED


class AbortError(BatchrunError):
    """The run stopped early because every further row would fail."""

    exit_code = EXIT_ABORTED
