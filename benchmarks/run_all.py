"""`make bench`: batchrun's speed, rate compliance, memory and resume figures.

Each benchmark starts its own `batchrun serve` on 127.0.0.1 and runs the
real `batchrun run` command as a child process. Results are printed as a
table and written to benchmarks/results.json; the README records them.

    python benchmarks/run_all.py [--only NAME ...] [--big-rows N]

NAME is one of: throughput, inflight, rate, memory, resume.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import WORK, machine, make_csv, run_batchrun, service  # noqa: E402

from batchrun.checkpoint import Watermark, load  # noqa: E402
from batchrun.sinks import RESULT_FIELDS, open_sink  # noqa: E402

HERE = Path(__file__).resolve().parent


def fresh(path: Path) -> Path:
    for old in path.parent.glob(path.name + "*"):
        old.unlink()
    return path


def common_args(url: str) -> list[str]:
    return ["--base-url", url, "--org", "bench", "--flow", "bench"]


def bench_throughput() -> dict[str, Any]:
    """Rows/s against an instant service, next to a bare aiohttp loop."""
    rows = 100_000
    data = make_csv(WORK / f"input-{rows}.csv", rows)
    out = fresh(WORK / "throughput.csv")
    with service() as svc:
        bare = float(
            subprocess.check_output(
                [sys.executable, str(HERE / "bare_loop.py"), svc.url, str(rows), "64"],
                text=True,
            )
        )
        result = run_batchrun(
            str(data), "-o", str(out), *common_args(svc.url), "--concurrency", "64"
        )
    assert result.code == 0, result.stderr
    batchrun_rate = rows / result.seconds
    return {
        "rows": rows,
        "batchrun_rows_per_s": round(batchrun_rate),
        "bare_aiohttp_loop_per_s": round(bare),
        "ratio": round(batchrun_rate / bare, 2),
        "peak_rss_mb": round(result.peak_rss_mb),
        "note": "CSV in, CSV out with checkpoints; wall time includes start-up",
    }


def bench_inflight() -> dict[str, Any]:
    """1,000 requests in flight against a service that answers after 1 s."""
    rows = 20_000
    data = make_csv(WORK / f"input-{rows}.csv", rows)
    out = fresh(WORK / "inflight.csv")
    with service("--latency", "1000") as svc:
        result = run_batchrun(
            str(data), "-o", str(out), *common_args(svc.url), "--concurrency", "1000"
        )
    assert result.code == 0, result.stderr
    rate = rows / result.seconds
    return {
        "rows": rows,
        "rows_per_s": round(rate),
        "ceiling_rows_per_s": 1000,
        "efficiency": round(rate / 1000, 3),
        "peak_rss_mb": round(result.peak_rss_mb),
    }


def worst_window(times: list[float], width: float = 1.0) -> int:
    """Most requests received in any window [t, t + width)."""
    times = sorted(times)
    worst, start = 0, 0
    for end, moment in enumerate(times):
        while moment - times[start] >= width:
            start += 1
        worst = max(worst, end - start + 1)
    return worst


def bench_rate() -> dict[str, Any]:
    """--rate as the service sees it: worst one-second window and mean rate."""
    results = {}
    for rate, rows in ((50, 500), (200, 3000)):
        data = make_csv(WORK / f"input-{rows}.csv", rows)
        out = fresh(WORK / f"rate-{rate}.csv")
        log = fresh(WORK / f"rate-{rate}.log")
        with service("--latency", "5-50", log=log) as svc:
            result = run_batchrun(
                str(data),
                "-o",
                str(out),
                *common_args(svc.url),
                "--concurrency",
                "100",
                "--rate",
                f"{rate}/s",
            )
        assert result.code == 0, result.stderr
        times = [float(record["time"]) for record in svc.records()]  # type: ignore[arg-type]
        span = max(times) - min(times)
        results[f"{rate}/s"] = {
            "requests": len(times),
            "worst_1s_window": worst_window(times),
            "mean_per_s": round((len(times) - 1) / span, 2) if span else None,
            "mean_error_pct": round(((len(times) - 1) / span / rate - 1) * 100, 2),
        }
    return results


def bench_memory(sizes: list[int]) -> dict[str, Any]:
    """Peak RSS of whole runs as the input grows (instant service)."""
    results = {}
    with service() as svc:
        for rows in sizes:
            data = make_csv(WORK / f"input-{rows}.csv", rows)
            out = fresh(WORK / f"memory-{rows}.csv")
            result = run_batchrun(
                str(data), "-o", str(out), *common_args(svc.url), "--concurrency", "64"
            )
            assert result.code == 0, result.stderr
            results[f"{rows:,} rows"] = {
                "peak_rss_mb": round(result.peak_rss_mb),
                "rows_per_s": round(rows / result.seconds),
            }
    return results


def bench_resume(rows: int, left: int = 1000) -> dict[str, Any]:
    """Resume a run of ``rows`` rows with all but ``left`` done.

    The done part is made by a real run of the first 1,000 rows, then
    extended to ``rows - left`` rows exactly as a run would have left it:
    records appended to the output and a watermark appended to the
    checkpoint (written with batchrun's own sink and checkpoint code).
    """
    data = make_csv(WORK / f"input-{rows}.csv", rows)
    out = fresh(WORK / "resume.csv")
    log = fresh(WORK / "resume.log")
    done = rows - left
    with service(log=log) as svc:
        args = [str(data), "-o", str(out), *common_args(svc.url)]
        first = run_batchrun(*args, "--limit", "1000")
        assert first.code == 0, first.stderr
        _extend_done(data, out, done)
        before = len(svc.records())
        launched = time.time()
        result = run_batchrun(*args)
        assert result.code == 0, result.stderr
        time.sleep(0.5)  # the service flushes its log every 0.2 s
        new = svc.records()[before:]
    assert len(new) == left, f"expected {left} new requests, saw {len(new)}"
    first_request = min(float(record["time"]) for record in new)  # type: ignore[arg-type]
    return {
        "rows": rows,
        "done_before": done,
        "seconds_to_first_request": round(first_request - launched, 2),
        "seconds_total": round(result.seconds, 2),
        "peak_rss_mb": round(result.peak_rss_mb),
    }


def _extend_done(data: Path, out: Path, done: int) -> None:
    """Append records for rows 1,001..done and a watermark that covers them."""
    state = load(str(out) + ".checkpoint")
    assert state.watermark.row == 1000
    sink = open_sink(str(out), RESULT_FIELDS)
    sink.reopen(os.path.getsize(out))
    number = 1000
    stamp = "2026-01-01T00:00:00.000Z"
    while number < done:
        upto = min(done, number + 200_000)
        records = [
            (n, "succeeded", 200, f"s-{n}", None, 1, False, stamp, 5, f"r-{n}")
            for n in range(number + 1, upto + 1)
        ]
        sink.append(sink.encode(records))
        number = upto
    end = sink.end
    sink.close()
    offset = 0
    with open(data, "rb") as file:
        for line_number, line in enumerate(file):
            offset += len(line)
            if line_number == done:  # line 0 is the header
                break
    mark = Watermark(done, done + 1, offset, end, end, {"succeeded": done})
    with open(str(out) + ".checkpoint", "a", encoding="utf-8") as file:
        file.write("w " + json.dumps(mark.__dict__) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="*", default=None)
    parser.add_argument("--big-rows", type=int, default=10_000_000)
    parser.add_argument(
        "--memory-sizes", default="200000,1000000", help="comma-separated row counts"
    )
    options = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    benches = {
        "throughput": bench_throughput,
        "inflight": bench_inflight,
        "rate": bench_rate,
        "memory": lambda: bench_memory(
            [int(n) for n in options.memory_sizes.split(",")]
        ),
        "resume": lambda: bench_resume(options.big_rows),
    }
    results: dict[str, Any] = {"machine": machine()}
    print(f"machine: {results['machine']}", flush=True)
    for name, bench in benches.items():
        if options.only and name not in options.only:
            continue
        started = time.perf_counter()
        results[name] = bench()
        took = time.perf_counter() - started
        print(f"{name} ({took:.0f} s): {json.dumps(results[name])}", flush=True)
    target = HERE / "results.json"
    previous = json.loads(target.read_text()) if target.exists() else {}
    previous.update(results)
    target.write_text(json.dumps(previous, indent=2) + "\n")
    print(f"written to {target}")


if __name__ == "__main__":
    main()
