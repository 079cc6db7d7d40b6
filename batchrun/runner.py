"""The run: read rows, execute the flow for each, record every outcome.

A run has three kinds of task sharing one event loop:

- the *feeder* reads row batches from the source (in a thread, so a slow
  disk never stalls requests), decides what each row needs (send it, record
  it invalid, skip it as already done) and puts the rows to send on a
  bounded queue;
- *workers*, at most ``concurrency`` of them, take rows off the queue, wait
  for the limiter, note the dispatch in the checkpoint, send, and retry what
  is worth retrying;
- the *flusher* appends finished records to the output in batches, then
  advances the checkpoint's watermark, then reports progress, so that what
  is shown as done is always on disk.

Ctrl-C or SIGTERM stops the feeder, lets in-flight requests finish within
the grace period and records them; a second signal stops at once. Either
way the checkpoint stays resumable.
"""

from __future__ import annotations

import asyncio
import collections
import gc
import hashlib
import heapq
import json
import os
import signal
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from . import resume
from .check import check_header
from .checkpoint import Ident, Ledger, Watermark
from .client import FlowClient, Kind, Outcome
from .config import RunConfig
from .errors import (
    EXIT_ABORTED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_ROWS_FAILED,
    BatchrunError,
)
from .failed import default_path as default_failed_path
from .failed import failed_rows, write_failed
from .limiter import RateLimiter
from .retry import RetryPolicy, parse_retry_after
from .rows import Row
from .sinks import RESULT_FIELDS, Sink, open_sink
from .sources import Position, Source, open_source
from .summary import Events, Summary
from .variables import RowProblem, VariableMapper, encode_body

FLUSH_INTERVAL = 0.05
FLUSH_RECORDS = 2000
STATUSES = ("succeeded", "failed", "invalid", "unknown")


@dataclass(slots=True)
class Job:
    """A row on its way through the pool."""

    row: Row
    ident: Ident
    body: bytes
    row_id: str
    resent: bool = False


def utc_now() -> str:
    """The time now, UTC, ISO 8601 to the millisecond."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Runner:
    """One `batchrun run`: prepare, then execute with :meth:`run`."""

    def __init__(self, config: RunConfig, events: Events | None = None) -> None:
        self.config = config
        self.events = events or Events()
        self.summary = Summary(output=config.output)
        self._source: Source | None = None
        self._sink: Sink | None = None
        self._ledger: Ledger | None = None
        self._columns: list[str] | None = None
        self._done_ahead: set[Ident] = set()
        self._floor = 0
        self._ahead_heap: list[tuple[int, int]] = []
        self._in_doubt: set[Ident] = set()
        self._retry_rows: set[Ident] | None = None
        self._done_keys: set[str] | None = None
        self._switch_interval: float | None = None
        self._rerecorded: set[Ident] = set()
        self._skipped_unsettled = False
        self._lock: resume.OutputLock | None = None

    # ------------------------------------------------------------------ prepare

    def prepare(self) -> None:
        """Open the input and the output, and work out what is left to do.

        On failure everything opened so far is closed again.
        """
        try:
            self._prepare()
        except BaseException:
            self.close()
            raise

    def _prepare(self) -> None:
        config = self.config
        self._source = open_source(config.input, config.source)
        self._source.check()
        self._columns = self._source.columns
        self.mapper = VariableMapper(config.mapping)
        check_header(config.input, self._columns, self.mapper, config.key_column)
        self.fields = self._output_fields()
        if config.key_column:
            resume.check_duplicate_keys(config)
        self._sink = open_sink(config.output, self.fields)
        resume.check_output_path(config)
        self._lock = resume.OutputLock(config.output)
        self._lock.acquire()
        plan = resume.open_output(
            config,
            self._sink,
            resume.identity(config, self.fields),
            self.events.notice,
        )
        self._ledger = plan.ledger
        self._done_ahead = plan.done_ahead
        self._ahead_heap = plan.ahead_heap
        self._in_doubt = plan.in_doubt
        self._retry_rows = plan.retry_rows
        self._done_keys = plan.done_keys
        self.summary.resumed = plan.resumed
        self.summary.totals = plan.totals

    def _output_fields(self) -> tuple[str, ...]:
        """The output's columns; also plans where each value comes from.

        With --include-input the input's columns come first; one whose name
        is taken by a result column (or by another renamed column) gets an
        ``input_`` prefix until it is unique. Headerless input (JSON Lines)
        goes in one ``input`` column as JSON.
        """
        results = list(RESULT_FIELDS)
        if self.config.key_column:
            results.insert(1, "key")
        self._plan_fields: list[tuple[str, str]] = [("result", n) for n in results]
        if not self.config.include_input:
            return tuple(results)
        taken = set(results)
        inputs: list[tuple[str, str]] = []
        if self._columns is None:
            name = "input"
            while name in taken:
                name = "input_" + name
            inputs.append(("json", name))
            names = [name]
        else:
            names = []
            for column in self._columns:
                name = column
                while name in taken:
                    name = "input_" + name
                taken.add(name)
                names.append(name)
                inputs.append(("input", column))
        self._plan_fields = inputs + self._plan_fields
        return (*names, *results)

    # --------------------------------------------------------------------- run

    def run(self) -> Summary:
        """Execute the batch; return the summary (also on interruption)."""
        if self._ledger is None:
            self.prepare()
        try:
            return asyncio.run(self._main())
        finally:
            self.close()

    def close(self) -> None:
        """Release the input, output and checkpoint files, then the lock."""
        for resource in (self._source, self._sink, self._ledger):
            if resource is not None:
                resource.close()
        if self._lock is not None:
            self._lock.release()
        self.events.close()

    async def _main(self) -> Summary:
        config = self.config
        assert self._sink is not None and self._ledger is not None
        self._loop = asyncio.get_running_loop()
        self._started = time.monotonic()
        self._queue: asyncio.Queue[Job | None] = asyncio.Queue(
            maxsize=config.concurrency * 2 + 64
        )
        self._pending: list[tuple[Row, Ident, list[Any], str]] = []
        self._flush_wanted = asyncio.Event()
        self._stopping = False
        self._fatal: str | None = None
        self._positions: dict[int, tuple[int, int | None]] = {}
        self._recorded_ahead: dict[int, int] = {}
        self._fed_all = False
        self._closing = False
        self._write_error: BatchrunError | None = None
        self._finished = 0
        self._failure_streak = 0
        self._streak_errors: collections.Counter[str] = collections.Counter()
        if config.rate is not None:
            # Keep sends on schedule: the reader thread may hold the GIL for
            # at most half a millisecond, and the garbage collector skips
            # the objects made during start-up.
            self._switch_interval = sys.getswitchinterval()
            sys.setswitchinterval(0.0005)
        gc.freeze()
        self.policy = RetryPolicy(config.max_attempts, config.max_retry_wait)
        self.limiter = RateLimiter(config.rate, burst=config.burst)
        mark = self._ledger.watermark
        self._floor = mark.row
        if self._retry_rows is None and self._done_keys is None:
            self.summary.skipped_done = mark.row - config.offset
        done = sum(mark.counts.values())
        self.events.start(done, self._estimate_total())
        self.events.info(
            f"running flow {config.target.flow} of {config.target.org} at "
            f"{config.target.base_url}: concurrency {config.concurrency}, rate "
            f"{config.rate or 'unlimited'}, timeouts {config.connect_timeout:g} s "
            f"connect / {config.read_timeout:g} s read, up to "
            f"{config.max_attempts} attempts per row"
        )
        signals = self._install_signals()
        try:
            async with FlowClient(
                config.target.url,
                config.token,
                concurrency=config.concurrency,
                connect_timeout=config.connect_timeout,
                read_timeout=config.read_timeout,
                ca_bundle=config.ca_bundle,
            ) as client:
                self._client = client
                await self._execute()
        finally:
            for sig in signals:
                self._loop.remove_signal_handler(sig)
            if self._switch_interval is not None:
                sys.setswitchinterval(self._switch_interval)
        return self._finish()

    async def _execute(self) -> None:
        flusher = asyncio.create_task(self._flusher())
        feeder = asyncio.create_task(self._feeder())
        workers = [
            asyncio.create_task(self._worker()) for _ in range(self.config.concurrency)
        ]
        self._workers = workers
        try:
            await feeder
            await asyncio.gather(*workers, return_exceptions=False)
        except asyncio.CancelledError:
            pass
        finally:
            for task in (feeder, *workers):
                task.cancel()
            await asyncio.gather(feeder, *workers, return_exceptions=True)
            self._closing = True
            self._flush_wanted.set()
            await asyncio.gather(flusher, return_exceptions=True)
            if self._write_error is not None:
                raise self._write_error
            self._flush()

    # ------------------------------------------------------------------ feeder

    async def _feeder(self) -> None:
        try:
            await self._feed()
        except BatchrunError as exc:
            # A problem found part-way through the file: requests in flight
            # finish and are recorded; the rest waits for a fixed input.
            self._abort(str(exc))
        finally:
            self._fed_all = not self._stopping
            if not self._stopping:
                for _ in self._workers:
                    await self._queue.put(None)

    async def _feed(self) -> None:
        assert self._source is not None and self._ledger is not None
        config = self.config
        floor = self._floor
        last = config.offset + config.limit if config.limit is not None else None
        start = None
        if floor and self._retry_rows is None:
            mark = self._ledger.watermark
            start = Position(mark.row, mark.line, mark.offset)
        batches = self._source.batches(start)
        while not self._stopping:
            batch = await asyncio.to_thread(next, batches, None)
            if batch is None:
                return
            for row in batch:
                if self._stopping:
                    return
                if last is not None and row.number > last:
                    return
                below = row.number <= floor
                if below and self._retry_rows is None:
                    continue
                job = self._plan(row, below)
                if job is not None:
                    await self._queue.put(job)

    def _plan(self, row: Row, below: bool) -> Job | None:
        """Decide what a row needs; return a Job if it must be sent.

        ``below`` rows are at or under the watermark this session started
        from; only --retry-failed reads them, and they never move it.
        """
        config = self.config
        if not below:
            self._positions[row.number] = (row.line, row.offset)
        ident: Ident = row.number
        if config.key_column and row.values is not None:
            ident = resume.key_text(row.values.get(config.key_column))
        if self._done_keys is not None:
            done = ident in self._done_keys
        elif below:
            retry = self._retry_rows is not None and ident in self._retry_rows
            done = not retry and ident not in self._in_doubt
        else:
            done = ident in self._done_ahead
        if done:
            self.summary.skipped_done += 1
            if not below:
                self._mark_recorded(row.number, -1)
                self._skipped_unsettled = True
            return None
        self.summary.read += 1
        if row.values is None:
            self._record(row, ident, "invalid", error=row.error)
            return None
        if config.key_column and ident == "":
            self._record(row, ident, "invalid", error=f"empty {config.key_column}")
            return None
        row_id = self._row_id(ident)
        try:
            variables = self.mapper.variables(row.values, row_id)
            body = encode_body(variables)
        except RowProblem as exc:
            self._record(row, ident, "invalid", error=f"line {row.line}: {exc}")
            return None
        resent = ident in self._in_doubt
        if resent:
            self.summary.in_doubt += 1
            if config.in_doubt == "skip":
                # The record, once written past the dispatch, settles the doubt.
                self._record(
                    row,
                    ident,
                    "unknown",
                    error="sent before an interruption and never answered; the "
                    "flow may have run: check it by hand",
                    resent=False,
                    row_id=row_id,
                )
                return None
            self.summary.resent += 1
        return Job(row, ident, body, row_id, resent)

    def _row_id(self, ident: Ident) -> str:
        assert self._ledger is not None
        if isinstance(ident, int):
            return f"{self._ledger.run_id}-{ident}"
        digest = hashlib.sha256(ident.encode("utf-8")).hexdigest()[:24]
        return f"{self._ledger.run_id}-k{digest}"

    # ----------------------------------------------------------------- workers

    async def _worker(self) -> None:
        queue = self._queue
        while True:
            job = await queue.get()
            if job is None or self._stopping:
                return
            await self._send(job)

    async def _send(self, job: Job) -> None:
        assert self._ledger is not None and self._sink is not None
        ledger, limiter = self._ledger, self.limiter
        attempts = 0
        started_at = ""
        began = time.monotonic()
        while True:
            await limiter.acquire()
            if self._stopping:
                return
            ledger.dispatched(job.ident, self._sink.end)
            attempts += 1
            if attempts == 1:
                started_at = utc_now()
                began = time.monotonic()
            else:
                self.summary.retries += 1
            self.summary.requests += 1
            outcome = await self._client.execute(job.body, job.row_id)
            limiter.answered(outcome.status == 429)
            kind = outcome.kind
            if kind is Kind.SUCCEEDED:
                self._done(job, "succeeded", outcome, attempts, started_at, began)
                return
            if kind is Kind.UNKNOWN:
                self._done(job, "unknown", outcome, attempts, started_at, began)
                return
            if kind is Kind.IN_DOUBT:
                if not self.config.resend_in_doubt:
                    self._done(job, "unknown", outcome, attempts, started_at, began)
                    return
                job.resent = True  # the flow may run twice from here on
            elif not job.resent:
                # An answer that did not execute ends the doubt about this
                # dispatch, but not about an earlier one whose answer was
                # lost: such a row stays in doubt until its record is written.
                ledger.released(job.ident)
            if kind is Kind.FATAL:
                self._abort(outcome.error or "the service refused the run")
                return
            if kind is Kind.REJECTED:
                self._done(job, "failed", outcome, attempts, started_at, began)
                return
            if kind is Kind.IN_DOUBT:
                self.summary.lost_answers += 1
            delay = self._retry_delay(outcome, attempts)
            if delay is None:
                status = "unknown" if kind is Kind.IN_DOUBT else "failed"
                self._done(job, status, outcome, attempts, started_at, began)
                return
            if self._stopping:
                return
            await asyncio.sleep(delay)

    def _retry_delay(self, outcome: Outcome, attempts: int) -> float | None:
        """Seconds before the next attempt, or None to give up on the row."""
        asked = parse_retry_after(outcome.retry_after)
        if asked is not None:
            if asked > self.config.max_retry_wait:
                outcome.error = (
                    f"{outcome.error}; the service asked to wait {asked:.0f} s, more "
                    f"than --max-retry-wait {self.config.max_retry_wait:g} s"
                )
                return None
            self.limiter.pause_until(time.monotonic() + asked)
        if not self.policy.can_retry(attempts):
            if attempts > 1:
                outcome.error = f"{outcome.error} (after {attempts} attempts)"
            return None
        return self.policy.wait(attempts, asked)

    def _done(
        self,
        job: Job,
        status: str,
        outcome: Outcome,
        attempts: int,
        started_at: str,
        began: float,
    ) -> None:
        latency = round((time.monotonic() - began) * 1000)
        self._record(
            job.row,
            job.ident,
            status,
            http_status=outcome.status,
            session_id=outcome.session_id,
            error=outcome.error,
            attempts=attempts,
            resent=job.resent,
            started_at=started_at,
            latency_ms=latency,
            row_id=job.row_id,
        )
        if status == "failed":
            self._failure_streak += 1
            self._streak_errors[_error_kind(outcome.error)] += 1
            if self._failure_streak >= self.config.max_consecutive_failures:
                common, count = self._streak_errors.most_common(1)[0]
                self._abort(
                    f"{self._failure_streak} rows failed in a row (most common "
                    f"error, {count} times: {common}); fix the cause and run the "
                    "same command to resume"
                )
        elif status == "succeeded":
            self._failure_streak = 0
            self._streak_errors.clear()

    def _abort(self, reason: str) -> None:
        if self.summary.aborted is None:
            self.summary.aborted = reason
            self.events.notice(f"stopping: {reason}")
        self._stop()

    # ------------------------------------------------------------------ record

    def _record(
        self,
        row: Row,
        ident: Ident,
        status: str,
        *,
        http_status: int | None = None,
        session_id: str | None = None,
        error: str | None = None,
        attempts: int = 0,
        resent: bool = False,
        started_at: str | None = None,
        latency_ms: int | None = None,
        row_id: str | None = None,
    ) -> None:
        result: dict[str, Any] = {
            "row": row.number,
            "key": ident if self.config.key_column else None,
            "status": status,
            "http_status": http_status,
            "session_id": session_id,
            "error": error,
            "attempts": attempts,
            "resent": resent,
            "started_at": started_at,
            "latency_ms": latency_ms,
            "row_id": row_id,
        }
        values = row.values or {}
        record: list[Any] = []
        for kind, name in self._plan_fields:
            if kind == "result":
                record.append(result[name])
            elif kind == "input":
                record.append(values.get(name))
            else:
                record.append(json.dumps(values, ensure_ascii=False) if values else "")
        self._pending.append((row, ident, record, status))
        if len(self._pending) >= FLUSH_RECORDS:
            self._flush_wanted.set()

    async def _flusher(self) -> None:
        while not self._closing:
            try:
                await asyncio.wait_for(self._flush_wanted.wait(), FLUSH_INTERVAL)
            except TimeoutError:
                pass
            self._flush_wanted.clear()
            try:
                self._flush()
            except BatchrunError as exc:  # disk full, output removed, ...
                self._write_error = exc
                self._stop()
                return

    def _flush(self) -> None:
        """Append pending records, then advance the watermark, then report."""
        if not self._pending:
            if self._skipped_unsettled and self._sink is not None:
                self._skipped_unsettled = False
                self._settle(self._sink.end)  # move over rows skipped as done
            return
        assert self._sink is not None and self._ledger is not None
        pending, self._pending = self._pending, []
        sink, ledger = self._sink, self._ledger
        offset = sink.end
        try:
            sink.append(sink.encode([record for _, _, record, _ in pending]))
        except Exception:
            self._pending = pending + self._pending
            raise
        counts = ledger.watermark.counts
        summary = self.summary
        for row, ident, _, status in pending:
            ledger.recorded(ident)
            counts[status] = counts.get(status, 0) + 1
            setattr(summary, status, getattr(summary, status) + 1)
            if self._retry_rows is not None and ident in self._retry_rows:
                counts["failed"] = counts.get("failed", 1) - 1
                self._rerecorded.add(ident)
            if row.number > self._floor:
                self._mark_recorded(row.number, offset)
            self._finished += 1
        self._settle(sink.end)
        summary.totals = dict(counts)
        self.events.progress({status: getattr(summary, status) for status in STATUSES})

    def _mark_recorded(self, number: int, offset: int) -> None:
        self._recorded_ahead[number] = offset
        if offset >= 0:
            heapq.heappush(self._ahead_heap, (offset, number))

    def _settle(self, out_end: int) -> None:
        """Move the watermark over every row that now has its record."""
        assert self._ledger is not None
        ledger = self._ledger
        mark = ledger.watermark
        row, line, offset = mark.row, mark.line, mark.offset
        ahead = self._recorded_ahead
        positions = self._positions
        while row + 1 in ahead:
            row += 1
            del ahead[row]
            position = positions.pop(row, None)
            if position is not None:
                line, offset = position
        heap = self._ahead_heap
        while heap and heap[0][1] <= row:
            heapq.heappop(heap)
        scan_from = heap[0][0] if heap else out_end
        ledger.advance(
            Watermark(row, line, offset, scan_from, out_end, dict(mark.counts))
        )

    # -------------------------------------------------------------------- stop

    def _install_signals(self) -> list[int]:
        installed: list[int] = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._loop.add_signal_handler(sig, self._on_signal, sig)
            except (NotImplementedError, RuntimeError, ValueError):
                continue
            installed.append(sig)
        return installed

    def _on_signal(self, sig: int) -> None:
        name = signal.Signals(sig).name
        if self.summary.interrupted:
            self.events.notice(f"{name} again: stopping now")
            for task in self._workers:
                task.cancel()
            return
        self.summary.interrupted = True
        self.events.notice(
            f"{name}: finishing the requests in flight (up to {self.config.grace:g} "
            "s; press Ctrl-C again to stop now)"
        )
        self._stop()
        self._loop.call_later(self.config.grace, self._cancel_workers)

    def _cancel_workers(self) -> None:
        for task in self._workers:
            task.cancel()

    def _stop(self) -> None:
        """Take no new rows; rows not yet sent stay for the next run."""
        if self._stopping:
            return
        self._stopping = True
        # Drop the rows waiting to be sent, then wake every idle worker. The
        # queue holds twice the workers, so the wake-ups always fit.
        while not self._queue.empty():
            self._queue.get_nowait()
        for _ in self._workers:
            try:
                self._queue.put_nowait(None)
            except asyncio.QueueFull:
                break

    def _finish(self) -> Summary:
        assert self._sink is not None and self._ledger is not None
        summary = self.summary
        summary.elapsed = time.monotonic() - self._started
        summary.complete = not self._stopping and self._fed_all
        settled = not self._recorded_ahead and not self._ledger.outstanding
        if summary.complete and self._rerecorded and settled:
            self._compact()
        self._sink.sync()
        if summary.complete:
            self._sink.finish()
        self._write_failed()
        if summary.aborted:
            summary.exit_code = EXIT_ABORTED
        elif summary.interrupted:
            summary.exit_code = EXIT_INTERRUPTED
        else:
            totals = summary.totals
            bad = sum(totals.get(status, 0) for status in STATUSES[1:])
            summary.exit_code = EXIT_ROWS_FAILED if bad else EXIT_OK
        return summary

    def _write_failed(self) -> None:
        """Refresh the failed-rows file from the output's last records."""
        assert self._sink is not None and self._source is not None
        config = self.config
        target = config.failed_out or default_failed_path(
            config.output, self._source.format
        )
        bad = sum(self.summary.totals.get(s, 0) for s in ("failed", "invalid"))
        if not bad and not os.path.exists(target):
            return
        if config.input == "-":
            self.events.notice("no failed-rows file: the input was standard input")
            return
        rows = failed_rows(self._sink)
        self.summary.failed_rows = write_failed(
            config.input, config.source, rows, target
        )
        if rows:
            self.summary.failed_out = target

    def _compact(self) -> None:
        assert self._sink is not None and self._ledger is not None
        by_key = self.config.key_column is not None
        resume.compact(self._sink, self._ledger, self._rerecorded, by_key)
        self._rerecorded.clear()

    # ------------------------------------------------------------------ totals

    def _estimate_total(self) -> int | None:
        """Rows this run covers (for the progress bar's ETA), if known."""
        assert self._source is not None
        total = self._source.estimated_rows()
        if total is None:
            return None
        total -= self.config.offset
        if self.config.limit is not None:
            total = min(total, self.config.limit)
        return max(total, 0)


def _error_kind(error: str | None) -> str:
    """Group errors for the consecutive-failure message."""
    return (error or "unknown error").split(" (after ")[0]


__all__ = ["Events", "Runner", "Summary"]
