"""Shared pieces of the benchmarks: a local service, input files, child RSS.

Everything talks only to a `batchrun serve` the benchmark starts itself on
127.0.0.1, and every loop is bounded.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

TOKEN = "bench-token"
WORK = Path(os.environ.get("BENCH_DIR", "/tmp/batchrun-bench"))


@dataclass
class Service:
    process: subprocess.Popen[str]
    url: str
    log: Path | None

    def records(self) -> list[dict[str, object]]:
        assert self.log is not None
        with open(self.log, encoding="utf-8") as file:
            return [json.loads(line) for line in file if line.endswith("\n")]


@contextmanager
def service(*args: str, log: Path | None = None) -> Iterator[Service]:
    """Run `batchrun serve` on a free loopback port for the duration."""
    command = [sys.executable, "-m", "batchrun", "serve", "--port", "0", *args]
    if log is not None:
        command += ["--log", str(log)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if "listening on " not in line:
            raise RuntimeError(f"the service did not start: {line!r}")
        yield Service(process, line.split("listening on ", 1)[1].strip(), log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def make_csv(path: Path, rows: int) -> Path:
    """A contacts-like CSV with ``rows`` data rows (reused if present)."""
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    with open(temporary, "w", encoding="utf-8", newline="") as file:
        file.write("contact_id,first_name,phone,zip,plan\n")
        chunk = []
        for number in range(1, rows + 1):
            chunk.append(
                f"C{number:08d},Name{number % 997},+1555{number % 10_000_000:07d},"
                f"{number % 100_000:05d},{('free', 'pro', 'gold')[number % 3]}\n"
            )
            if len(chunk) == 100_000:
                file.write("".join(chunk))
                chunk = []
        file.write("".join(chunk))
    temporary.rename(path)
    return path


@dataclass
class RunResult:
    code: int
    seconds: float
    peak_rss_mb: float
    stderr: str


def run_batchrun(*args: str, extra_env: dict[str, str] | None = None) -> RunResult:
    """Run `batchrun run ...` as a child; measure its wall time and peak RSS."""
    env = dict(os.environ, BATCHRUN_TOKEN=TOKEN, **(extra_env or {}))
    command = [sys.executable, "-m", "batchrun", "run", "--quiet", *args]
    started = time.perf_counter()
    process = subprocess.Popen(
        command, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True
    )
    assert process.stderr is not None
    peak = [0]
    watcher = threading.Thread(target=_watch_peak, args=(process, peak), daemon=True)
    watcher.start()
    stderr = process.stderr.read()
    process.wait()
    seconds = time.perf_counter() - started
    watcher.join(timeout=5)
    return RunResult(process.returncode, seconds, peak[0] / 1024, stderr)


def _watch_peak(process: subprocess.Popen[str], peak: list[int]) -> None:
    """Follow the child's own high-water RSS (VmHWM, in kB) until it exits.

    getrusage's ru_maxrss is not used: on Linux a child inherits the parent's
    high-water mark across fork and exec, so it would report the benchmark's
    own memory instead of batchrun's.
    """
    path = f"/proc/{process.pid}/status"
    while process.poll() is None:
        try:
            with open(path) as file:
                for line in file:
                    if line.startswith("VmHWM:"):
                        peak[0] = max(peak[0], int(line.split()[1]))
                        break
        except OSError:
            return
        time.sleep(0.02)


def machine() -> str:
    """One line describing this machine."""
    cpus = os.cpu_count()
    memory = ""
    try:
        with open("/proc/meminfo") as file:
            kb = int(file.readline().split()[1])
        memory = f", {kb / 1024 / 1024:.0f} GiB RAM"
    except OSError:
        pass
    model = ""
    try:
        with open("/proc/cpuinfo") as file:
            for line in file:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip() + ", "
                    break
    except OSError:
        pass
    return (
        f"{model}{cpus} cores{memory}, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}"
    )
