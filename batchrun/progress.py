"""What a person sees while a run goes: the progress bar and notices."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from .runner import Events


class ConsoleEvents(Events):
    """Progress on stderr: a tqdm bar when stderr is a terminal, else nothing.

    The bar starts at the rows finished by earlier sessions; its rate and ETA
    come from this session's work only. It is updated only after records are
    on disk, so what it shows as done is done.
    """

    def __init__(self, *, quiet: bool = False, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.show_bar = not quiet and self.stream.isatty()
        self._bar: Any = None
        self._done_before = 0
        self._last = 0
        self._last_draw = 0.0

    def start(self, done: int, total: int | None) -> None:
        self._done_before = done
        if done and not self.quiet:
            self.notice(f"resuming: {done:,} rows already have a record")
        if not self.show_bar:
            return
        from tqdm import tqdm

        self._bar = tqdm(
            total=total,
            initial=done,
            unit="row",
            unit_scale=True,
            dynamic_ncols=True,
            file=self.stream,
            smoothing=0.1,
            mininterval=0.2,
        )

    def progress(self, counts: dict[str, int]) -> None:
        if self._bar is None:
            return
        done = sum(counts.values())
        bar = self._bar
        if bar.total is not None and self._done_before + done > bar.total:
            bar.total = self._done_before + done
        bar.update(done - self._last)
        self._last = done
        now = time.monotonic()
        if now - self._last_draw > 0.5:
            self._last_draw = now
            bar.set_postfix(
                ok=counts.get("succeeded", 0),
                failed=counts.get("failed", 0) + counts.get("unknown", 0),
                invalid=counts.get("invalid", 0),
                refresh=False,
            )

    def notice(self, message: str) -> None:
        if self._bar is not None:
            self._bar.write(f"batchrun: {message}", file=self.stream)
        else:
            print(f"batchrun: {message}", file=self.stream, flush=True)

    def info(self, message: str) -> None:
        if not self.quiet:
            self.notice(message)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
