"""The Python API: run a batch from a notebook or a script.

    import batchrun

    summary = batchrun.run_batch(
        "contacts.csv",
        "results.csv",
        base_url="https://gateway.example.com",
        org="acme",
        flow="welcome-message",
        rate="20/s",
    )
    print(summary.succeeded, summary.failed)
    frame = batchrun.read_results("results.csv")  # a pandas DataFrame

The options are the command line's, with underscores; the token comes from
``token=`` or the BATCHRUN_TOKEN environment variable, as on the command
line. Errors raise :class:`batchrun.errors.BatchrunError` subclasses instead
of exiting; resuming works exactly as on the command line.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from collections.abc import Mapping as MappingType
from typing import Any

from .config import (
    DEFAULT_BURST,
    DEFAULT_CONCURRENCY,
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_GRACE,
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_MAX_CONSECUTIVE_FAILURES,
    DEFAULT_MAX_RETRY_WAIT,
    DEFAULT_READ_TIMEOUT,
    Mapping,
    RunConfig,
    Secret,
    Target,
    check_base_url,
    check_path_segment,
    parse_rate,
)
from .errors import UsageError
from .runner import Events, Runner, Summary
from .sources import SourceOptions


def run_batch(
    input: str,
    output: str,
    *,
    base_url: str,
    org: str,
    flow: str,
    token: str | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    rate: str | None = None,
    burst: int = DEFAULT_BURST,
    timeout: float = DEFAULT_READ_TIMEOUT,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    max_retry_wait: float = DEFAULT_MAX_RETRY_WAIT,
    max_consecutive_failures: int = DEFAULT_MAX_CONSECUTIVE_FAILURES,
    include_input: bool = False,
    empty: str = "text",
    format: str | None = None,
    encoding: str | None = None,
    delimiter: str | None = None,
    sheet: str | None = None,
    columns: Iterable[str] | None = None,
    rename: MappingType[str, str] | None = None,
    set: MappingType[str, str] | None = None,
    require: Iterable[str] = (),
    row_id_var: str | None = None,
    key_column: str | None = None,
    limit: int | None = None,
    offset: int = 0,
    restart: bool = False,
    retry_failed: bool = False,
    in_doubt: str = "resend",
    resend: bool = True,
    grace: float = DEFAULT_GRACE,
    ca_bundle: str | None = None,
    allow_insecure_http: bool = False,
    failed_out: str | None = None,
    events: Events | None = None,
) -> Summary:
    """Run ``input`` through the flow, recording outcomes in ``output``.

    Returns the :class:`~batchrun.runner.Summary` (counts, elapsed time,
    ``exit_code`` as the command line would exit). Usage and input problems
    raise before anything is sent.
    """
    secret = token if token is not None else os.environ.get("BATCHRUN_TOKEN", "")
    if not secret.strip():
        raise UsageError("no token: pass token=... or set BATCHRUN_TOKEN")
    config = RunConfig(
        input=os.fspath(input),
        output=os.fspath(output),
        target=Target(
            check_base_url(base_url, allow_insecure_http=allow_insecure_http),
            check_path_segment("org", org),
            check_path_segment("flow", flow),
        ),
        token=Secret(secret.strip()),
        source=SourceOptions(
            format=format, encoding=encoding, delimiter=delimiter, sheet=sheet
        ),
        mapping=Mapping(
            columns=tuple(columns) if columns is not None else None,
            rename=tuple((rename or {}).items()),
            constants=tuple((set or {}).items()),
            require=tuple(require),
            empty=empty,
            row_id_var=row_id_var,
        ),
        concurrency=concurrency,
        rate=parse_rate(rate) if rate else None,
        burst=burst,
        connect_timeout=connect_timeout,
        read_timeout=timeout,
        max_attempts=max_attempts,
        max_retry_wait=max_retry_wait,
        max_consecutive_failures=max_consecutive_failures,
        resend_in_doubt=resend,
        in_doubt=in_doubt,
        include_input=include_input,
        restart=restart,
        retry_failed=retry_failed,
        key_column=key_column,
        grace=grace,
        limit=limit,
        offset=offset,
        ca_bundle=ca_bundle,
        failed_out=failed_out,
    )
    return Runner(config, events).run()


def read_results(output: str) -> Any:
    """The records of an output file as a pandas DataFrame (needs pandas).

    Reads .csv and .jsonl outputs as text exactly as written (no type
    guessing), .parquet with its types, and .xlsx with openpyxl. When a row
    has several records (after --retry-failed on an interrupted run), the
    last one is kept.
    """
    try:
        import pandas as pd
    except ImportError:
        raise UsageError(
            "read_results needs pandas: pip install 'batchrun[dataframe]'"
        ) from None
    path = os.fspath(output)
    extension = os.path.splitext(path)[1].lower()
    if extension == ".csv":
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    elif extension in (".jsonl", ".ndjson"):
        frame = pd.read_json(path, lines=True, dtype=False)
    elif extension == ".parquet":
        frame = pd.read_parquet(path)
    elif extension == ".xlsx":
        frame = pd.read_excel(path, dtype=str, keep_default_na=False)
    else:
        raise UsageError(
            f"{path}: not a batchrun output (.csv, .jsonl, .parquet, .xlsx)"
        )
    if "row" in frame.columns:
        frame["row"] = frame["row"].astype("int64")
        frame = frame.drop_duplicates("row", keep="last").sort_values("row")
        frame = frame.reset_index(drop=True)
    return frame


__all__ = ["read_results", "run_batch"]
