"""What a person sees while a run goes: the progress bar and notices."""

from __future__ import annotations

import json
import sys
import time
from typing import TYPE_CHECKING, Any, TextIO

from .runner import Events

if TYPE_CHECKING:
    from .config import RunConfig


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
        self._counts: dict[str, int] = {}

    def configured(self, config: RunConfig) -> None:
        """The run's configuration is known (the token stays out of it)."""

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
            unit_scale=False,
            dynamic_ncols=True,
            file=self.stream,
            smoothing=0.1,
            mininterval=0.2,
        )

    def progress(self, counts: dict[str, int]) -> None:
        if self._bar is None:
            return
        self._counts = counts
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
        if self._bar is not None and self._counts:
            counts = self._counts
            self._bar.set_postfix(
                ok=counts.get("succeeded", 0),
                failed=counts.get("failed", 0) + counts.get("unknown", 0),
                invalid=counts.get("invalid", 0),
                refresh=True,
            )
        if self._bar is not None:
            self._bar.close()
            self._bar = None


class JsonEvents(ConsoleEvents):
    """--log-format json: one JSON object per line on stderr, no progress bar.

    Events: ``start`` (the configuration, without the token), ``notice``,
    ``progress`` (at most every 10 s), ``summary`` or ``error``.
    """

    PROGRESS_EVERY = 10.0

    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__(quiet=True, stream=stream)
        self.show_bar = False

    def emit(self, event: str, **fields: Any) -> None:
        """Write one log line."""
        record = {"time": round(time.time(), 3), "event": event, **fields}
        self.stream.write(json.dumps(record, default=str) + "\n")
        self.stream.flush()

    def configured(self, config: RunConfig) -> None:
        self.emit("start", config=describe_config(config))

    def start(self, done: int, total: int | None) -> None:
        self.emit("resume" if done else "begin", done=done, total=total)

    def progress(self, counts: dict[str, int]) -> None:
        now = time.monotonic()
        if now - self._last_draw >= self.PROGRESS_EVERY:
            self._last_draw = now
            self.emit("progress", **counts)

    def notice(self, message: str) -> None:
        self.emit("notice", message=message)

    def info(self, message: str) -> None:
        pass


def describe_config(config: RunConfig) -> dict[str, Any]:
    """The run's settings as JSON-safe values, minus the token."""
    return {
        "input": config.input,
        "output": config.output,
        "base_url": config.target.base_url,
        "org": config.target.org,
        "flow": config.target.flow,
        "concurrency": config.concurrency,
        "rate": str(config.rate) if config.rate else None,
        "burst": config.burst,
        "connect_timeout_s": config.connect_timeout,
        "read_timeout_s": config.read_timeout,
        "max_attempts": config.max_attempts,
        "max_retry_wait_s": config.max_retry_wait,
        "max_consecutive_failures": config.max_consecutive_failures,
        "in_doubt": config.in_doubt,
        "resend_in_doubt": config.resend_in_doubt,
        "mapping": config.mapping.describe(),
        "key_column": config.key_column,
        "limit": config.limit,
        "offset": config.offset,
        "restart": config.restart,
        "retry_failed": config.retry_failed,
    }
