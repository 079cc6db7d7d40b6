"""batchrun report --html in a real browser: headless Chromium draws the page.

Chromium is found on PATH; when missing and this runs as root with apt, it is
installed (Debian's package, at most 300 s); otherwise the test is skipped.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import struct
import subprocess
import zlib
from pathlib import Path

import pytest
from click.testing import CliRunner

from batchrun.report import report

INSTALL_TIMEOUT = 300
SCREENSHOT_TIMEOUT = 60
WIDTH, HEIGHT = 1280, 1600


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    return None


def install_chromium() -> str | None:
    """Install Debian's chromium when root with apt; None if that fails."""
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return None
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    steps = [
        ["apt-get", "install", "-y", "-qq", "chromium"],
        ["apt-get", "update", "-qq"],  # stale package lists: refresh and retry
        ["apt-get", "install", "-y", "-qq", "chromium"],
    ]
    remaining = float(INSTALL_TIMEOUT)
    for step in steps:
        started = os.times().elapsed
        try:
            done = subprocess.run(step, env=env, capture_output=True, timeout=remaining)
        except subprocess.TimeoutExpired:
            return None
        remaining -= os.times().elapsed - started
        if step[1] == "install" and done.returncode == 0:
            return find_chromium()
        if remaining <= 0:
            return None
    return None


@pytest.fixture(scope="module")
def chromium() -> str:
    path = find_chromium() or install_chromium()
    if path is None:
        pytest.skip(
            "no Chromium: put chromium on PATH (Debian: apt-get install chromium) "
            "to run the browser check of batchrun report --html"
        )
    return path


def screenshot(chromium: str, page: Path, png: Path, profile: Path) -> None:
    """Render ``page`` headless into ``png``; kill the browser on timeout."""
    command = [
        chromium,
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        f"--screenshot={png}",
        f"--window-size={WIDTH},{HEIGHT}",
        page.as_uri(),
    ]
    process = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        _, stderr = process.communicate(timeout=SCREENSHOT_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # the browser and its helpers
        process.communicate()
        pytest.fail(f"chromium took longer than {SCREENSHOT_TIMEOUT} s")
    assert process.returncode == 0, stderr.decode("utf-8", "replace")[-2000:]


def png_size_and_pixels(png: Path) -> tuple[int, int, bytes]:
    """Width, height and the inflated (still filtered) pixel stream of a PNG."""
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    offset, width, height, idat = 8, 0, 0, b""
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind = data[offset + 4 : offset + 8]
        chunk = data[offset + 8 : offset + 8 + length]
        if kind == b"IHDR":
            width, height = struct.unpack(">II", chunk[:8])
        elif kind == b"IDAT":
            idat += chunk
        offset += 12 + length
    return width, height, zlib.decompress(idat)


def write_sample_output(path: Path) -> None:
    """A JSON Lines output of 2,000 rows: mostly succeeded, a few kinds of error."""
    lines = []
    for row in range(1, 2001):
        second = row // 20
        status, http, error = "succeeded", 200, None
        if row % 23 == 0:
            status, http, error = "failed", 400, "HTTP 400: Missing phone"
        elif row % 97 == 0:
            status, http, error = "failed", 500, "<script>alert(1)</script>"
        record = {
            "row": row,
            "status": status,
            "http_status": http,
            "session_id": f"s-{row}" if status == "succeeded" else None,
            "error": error,
            "attempts": 1 + (row % 31 == 0),
            "resent": False,
            "started_at": f"2026-12-04T15:{second // 60:02d}:{second % 60:02d}.000Z",
            "latency_ms": 20 + (row * 7919) % 900,
            "row_id": f"run-{row}",
        }
        lines.append(json.dumps(record))
    path.write_text("\n".join(lines) + "\n")


def test_report_html_renders_in_chromium(tmp_path: Path, chromium: str) -> None:
    output, page = tmp_path / "results.jsonl", tmp_path / "report.html"
    png = tmp_path / "report.png"
    write_sample_output(output)
    result = CliRunner().invoke(report, [str(output), "--html", str(page)])
    assert result.exit_code == 0, result.output

    screenshot(chromium, page, png, tmp_path / "profile")

    width, height, pixels = png_size_and_pixels(png)
    assert (width, height) == (WIDTH, HEIGHT)
    assert png.stat().st_size > 40_000
    # One colour filtered row by row leaves a handful of byte values; a page
    # with text, bars and axes leaves nearly all 256.
    assert len(set(pixels)) > 200
