"""batchrun: run a hosted flow once for every row of a data file."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("batchrun")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

from .api import read_results, run_batch  # noqa: E402
from .runner import Summary  # noqa: E402

__all__ = ["Summary", "__version__", "read_results", "run_batch"]
