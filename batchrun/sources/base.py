"""What every input reader provides: columns and a stream of row batches."""

from __future__ import annotations

import abc
from collections.abc import Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING

from ..rows import Row

if TYPE_CHECKING:
    from . import SourceOptions

DEFAULT_BATCH_SIZE = 1000


@dataclass(frozen=True, slots=True)
class Position:
    """Where to continue reading: just after data row ``row``.

    ``line`` is the physical line (or sheet row) of that row's end and
    ``offset`` the byte offset just past it, both as reported by the source
    on the Row it yielded. A source that can seek uses ``offset``; the others
    read from the start and skip rows up to ``row``.
    """

    row: int
    line: int = 0
    offset: int | None = None


class Source(abc.ABC):
    """A reader of one input file; use as a context manager."""

    format: str = ""

    def __init__(self, path: str, fmt: str, options: SourceOptions) -> None:
        self.path = path
        self.format = fmt
        self.options = options
        self.batch_size = options.batch_size

    @property
    def columns(self) -> list[str] | None:
        """The header's column names, or None for formats without a header."""
        return None

    @abc.abstractmethod
    def batches(self, start: Position | None = None) -> Iterator[list[Row]]:
        """Yield lists of at most ``batch_size`` rows, in file order.

        With ``start``, only rows numbered above ``start.row`` are yielded,
        still carrying their true number and line.
        """

    def check(self) -> None:  # noqa: B027
        """Check the whole file can be read (its encoding, for text formats).

        Called once before a run sends anything; raises InputError.
        """

    def estimated_rows(self) -> int | None:
        """About how many data rows the file holds, if cheap to know.

        Only for the progress bar's ETA; text formats know it after check().
        """
        return None

    def close(self) -> None:  # noqa: B027
        """Release the file handle; safe to call twice."""

    def __enter__(self) -> Source:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
