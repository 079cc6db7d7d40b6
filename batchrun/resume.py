"""Where a run starts: a new output, a resumed one, or one set aside.

Before anything is sent, the output and its checkpoint are brought to a
state the run can append to, and the checkpoint's record is turned into a
:class:`Resumption`: which rows past the watermark are done, which were sent
but never answered (in doubt), which failed rows to send again
(--retry-failed), and where the watermark may start.
"""

from __future__ import annotations

import fcntl
import heapq
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from . import checkpoint
from .checkpoint import Ident, Ledger, LedgerState, Watermark
from .config import RunConfig
from .errors import CheckpointError, InputError, OutputError, UsageError
from .sinks import Sink
from .sources import open_source

Notice = Callable[[str], None]


@dataclass
class Resumption:
    """What the checkpoint and the output say is left to do."""

    ledger: Ledger
    resumed: bool = False
    done_ahead: set[Ident] = field(default_factory=set)
    ahead_heap: list[tuple[int, int]] = field(default_factory=list)
    in_doubt: set[Ident] = field(default_factory=set)
    retry_rows: set[Ident] | None = None
    done_keys: set[str] | None = None
    totals: dict[str, int] = field(default_factory=dict)


class OutputLock:
    """Keeps two runs from writing one output at the same time.

    An exclusive flock on ``OUTPUT.lock``, held for the whole run; the file
    is removed (while still locked) when the run ends, so a run that opened
    it just before sees a different file and tries again.
    """

    def __init__(self, output: str) -> None:
        self.output = output
        self.path = output + ".lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock, or raise UsageError if another run holds it."""
        for _ in range(5):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise OutputError(
                    f"{self.path}: cannot create the lock file ({exc.strerror}); "
                    "check the output's folder is writable"
                ) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise UsageError(
                    f"{self.output} is being written by another batchrun run; "
                    "wait for it to finish (or stop it), then run again"
                ) from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
                self._fd = fd
                return
            os.close(fd)  # the holder removed it as we opened it: try again
        raise UsageError(f"{self.output}: could not take the lock {self.path}")

    def release(self) -> None:
        """Remove the lock file and let go; safe to call twice."""
        if self._fd is None:
            return
        try:
            os.unlink(self.path)
        except OSError:
            pass
        os.close(self._fd)
        self._fd = None


def check_output_path(config: RunConfig) -> None:
    """Refuse an output in a missing folder, or one that is the input itself."""
    folder = os.path.dirname(os.path.abspath(config.output))
    if not os.path.isdir(folder):
        raise UsageError(
            f"-o {config.output}: the folder {folder} does not exist; create it "
            "or choose another output path"
        )
    if config.input != "-" and os.path.exists(config.input):
        names = [config.output, checkpoint_path(config.output)]
        for name in names:
            if os.path.exists(name) and os.path.samefile(name, config.input):
                raise UsageError(
                    f"-o {config.output} would overwrite the input; choose "
                    "another output path"
                )
        if os.path.abspath(config.output) == os.path.abspath(config.input):
            raise UsageError(
                f"-o {config.output} is the input file; choose another output path"
            )


def checkpoint_path(output: str) -> str:
    """Where the checkpoint of ``output`` lives."""
    return output + checkpoint.SUFFIX


def key_text(value: Any) -> str:
    """A --key-column value as the text that identifies its row."""
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value)


def identity(config: RunConfig, fields: tuple[str, ...]) -> dict[str, Any]:
    """What a checkpoint belongs to; a resume must match it."""
    source = config.source
    return {
        "input": None if config.key_column else checkpoint.fingerprint(config.input),
        "base_url": config.target.base_url,
        "org": config.target.org,
        "flow": config.target.flow,
        "mapping": config.mapping.describe(),
        "key_column": config.key_column,
        "fields": list(fields),
        "source": {
            "format": source.format,
            "encoding": source.encoding,
            "delimiter": source.delimiter,
            "sheet": source.sheet,
            "offset": config.offset,
        },
    }


def open_output(
    config: RunConfig, sink: Sink, ident: dict[str, Any], notice: Notice
) -> Resumption:
    """Create, resume or (with --restart) set aside and recreate the output."""
    path = checkpoint_path(config.output)
    if config.restart:
        set_aside(config.output, path, sink, notice)
    if os.path.exists(path):
        return resume(config, path, ident, sink, notice)
    if os.path.exists(sink.path) and os.path.getsize(sink.path) > 0:
        raise UsageError(
            f"{sink.path} already exists and has no checkpoint beside it; "
            "choose another -o, or pass --restart to keep it under a new "
            "name and start over"
        )
    if config.retry_failed:
        raise UsageError(
            f"--retry-failed: {config.output} has no earlier run to retry; "
            "run without --retry-failed first"
        )
    return Resumption(start_new(path, ident, sink, config.offset))


def start_new(path: str, ident: dict[str, Any], sink: Sink, offset: int) -> Ledger:
    """A new checkpoint first, then a new output (header only)."""
    start = Watermark(row=offset)
    ledger = Ledger.create(path, ident, start)
    sink.create()
    start.out_end = start.scan_from = sink.end
    ledger.advance(start)
    return ledger


def set_aside(output: str, path: str, sink: Sink, notice: Notice) -> None:
    """--restart: keep the old output and checkpoint under new names."""
    if not any(os.path.exists(p) for p in (output, sink.path, path)):
        return
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    root, ext = os.path.splitext(output)
    kept = f"{root}.before-{stamp}{ext}"
    number = 1
    while any(os.path.exists(kept + tail) for tail in ("", ".checkpoint")) or (
        sink.path != output and os.path.exists(kept + ".journal.jsonl")
    ):
        number += 1
        kept = f"{root}.before-{stamp}-{number}{ext}"
    moves = [(output, kept), (path, kept + checkpoint.SUFFIX)]
    if sink.path != output:
        moves.append((sink.path, kept + ".journal.jsonl"))
    for old, new in moves:
        if os.path.exists(old):
            os.replace(old, new)
            notice(f"kept the previous {old} as {new}")


def nothing_done(state: LedgerState, sink: Sink) -> bool:
    """True if a checkpoint's run sent nothing and recorded nothing."""
    if state.outstanding or any(state.watermark.counts.values()):
        return False
    if not os.path.exists(sink.path):
        return True
    return os.path.getsize(sink.path) <= len(sink.header())


def resume(
    config: RunConfig, path: str, ident: dict[str, Any], sink: Sink, notice: Notice
) -> Resumption:
    """Check the checkpoint belongs to this run, repair the output, plan the rest."""
    state = checkpoint.load(path)
    change = checkpoint.describe_change(state.identity, ident)
    if change and nothing_done(state, sink):
        notice(
            f"the earlier run of {config.output} recorded nothing; "
            "starting afresh with the new options"
        )
        os.remove(path)
        if os.path.exists(sink.path):
            os.remove(sink.path)
        return Resumption(start_new(path, ident, sink, config.offset))
    if change:
        raise CheckpointError(
            f"{config.output} belongs to a different run: {change} "
            "changed since it was started; run with the same input and options "
            "to resume, or pass --restart to start over (the old output is kept)"
        )
    mark = state.watermark
    if not os.path.exists(sink.path):
        if mark.row > config.offset or mark.out_end > 0:
            raise CheckpointError(
                f"{sink.path} is missing but its checkpoint says rows are done; "
                "put the output back, or pass --restart to start over"
            )
        sink.create()
        mark.out_end = mark.scan_from = sink.end
    by_key = config.key_column is not None
    last_at, last_status, heap = _scan(config, state, sink, notice)
    # A dispatch with a record at or after it was answered and recorded; one
    # without is in doubt. Only those stay outstanding in the checkpoint.
    state.outstanding = {
        i: out for i, out in state.outstanding.items() if last_at.get(i, -1) < out
    }
    plan = Resumption(Ledger.resume(path, state), resumed=True, ahead_heap=heap)
    plan.in_doubt.update(state.outstanding)
    retry = config.retry_failed
    if retry:
        plan.retry_rows = {i for i, status in last_status.items() if status == "failed"}
    done = {
        i
        for i, status in last_status.items()
        if not (retry and status == "failed") and i not in plan.in_doubt
    }
    if by_key:
        # Rows are found by key, whatever their position: read the whole
        # input, and count the watermark from its first row again.
        plan.done_keys = {str(i) for i in done}
        size = sink.end
        plan.ledger.watermark = Watermark(0, 0, None, size, size, dict(mark.counts))
    else:
        plan.done_ahead = {i for i in done if isinstance(i, int) and i > mark.row}
    plan.totals = dict(mark.counts)
    return plan


def _scan(
    config: RunConfig,
    state: LedgerState,
    sink: Sink,
    notice: Notice,
) -> tuple[dict[Ident, int], dict[Ident, str], list[tuple[int, int]]]:
    """Read the output's records that matter; cut a torn tail away.

    Only the records from the first one that may lie past the watermark are
    read, unless --retry-failed or --key-column need them all. Returns each
    row's last record offset and status, and a heap of (offset, row) of the
    records past the watermark.
    """
    mark = state.watermark
    header_end = len(sink.header())
    full = config.retry_failed or config.key_column is not None
    starts = [mark.scan_from, *state.outstanding.values()]
    scan_from = header_end if full else max(header_end, min(starts))
    size = os.path.getsize(sink.path)
    if scan_from > size and not state.outstanding:
        scan_from = size  # compacted after --retry-failed; nothing to scan
    if scan_from > size:
        raise CheckpointError(
            f"{sink.path} is shorter than its checkpoint says; it was changed "
            "outside batchrun: pass --restart to start over"
        )
    last_at: dict[Ident, int] = {}
    last_status: dict[Ident, str] = {}
    heap: list[tuple[int, int]] = []
    end = scan_from
    by_key = config.key_column is not None
    try:
        for record in sink.scan(scan_from):
            ident: Ident = record.fields["key"] if by_key else record.row
            last_at[ident] = record.offset
            last_status[ident] = record.status
            if not by_key and record.row > mark.row:
                # Keep scan_from at or before every record past the
                # watermark until the watermark passes its row.
                heapq.heappush(heap, (record.offset, record.row))
            end = record.end
    except OSError as exc:
        raise OutputError(
            f"{sink.path}: cannot read the output ({exc.strerror}); put the "
            "output back or pass --restart"
        ) from None
    if end < os.path.getsize(sink.path):
        notice(
            f"cut a torn last record from {sink.path} (bytes {end} on); "
            "its row will be sent again"
        )
    sink.reopen(end)
    return last_at, last_status, heap


def check_duplicate_keys(config: RunConfig) -> None:
    """--key-column: report duplicate keys before anything is sent."""
    key = config.key_column
    assert key is not None
    if config.input == "-":
        raise UsageError(
            "--key-column needs an input file: keys are checked for "
            "duplicates before anything is sent, and standard input can "
            "be read only once; save the input to a file"
        )
    seen: dict[str, int] = {}
    duplicates: list[str] = []
    with open_source(config.input, config.source) as source:
        for batch in source.batches():
            for row in batch:
                if row.values is None:
                    continue
                value = key_text(row.values.get(key))
                if value == "":
                    continue  # recorded invalid when the run reaches it
                if value in seen and len(duplicates) < 5:
                    duplicates.append(
                        f"{value!r} on lines {seen[value]} and {row.line}"
                    )
                seen.setdefault(value, row.line)
    if duplicates:
        raise InputError(
            f"{config.input}: --key-column {key} has duplicate keys: "
            f"{'; '.join(duplicates)}; make the keys unique or use row numbers"
        )


def compact(sink: Sink, ledger: Ledger, rerecorded: set[Ident], by_key: bool) -> None:
    """Keep only the newest record of rows recorded again (--retry-failed).

    The compacted output replaces the old one atomically, then the
    checkpoint is rewritten to match; a crash between the two leaves a
    checkpoint whose offsets lie past the end of the output, which a resume
    with nothing outstanding accepts.
    """
    header = sink.header()
    newest: dict[Ident, int] = {}
    for record in sink.scan(len(header)):
        ident = record.fields["key"] if by_key else record.row
        if ident in rerecorded:
            newest[ident] = record.offset
    temporary = sink.path + ".compact"
    with open(sink.path, "rb") as source, open(temporary, "wb") as target:
        target.write(header)
        for record in sink.scan(len(header)):
            ident = record.fields["key"] if by_key else record.row
            if ident in newest and newest[ident] != record.offset:
                continue
            source.seek(record.offset)
            target.write(source.read(record.end - record.offset))
        target.flush()
        os.fsync(target.fileno())
        size = target.tell()
    sink.close()
    os.replace(temporary, sink.path)
    sink.reopen(size)
    mark = ledger.watermark
    ledger.outstanding.clear()
    ledger.watermark = Watermark(
        mark.row, mark.line, mark.offset, size, size, dict(mark.counts)
    )
    ledger.compact()
