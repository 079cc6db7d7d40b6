"""The command line: options in, configuration out, exit codes back.

Every option can also be set by an environment variable named
``BATCHRUN_<OPTION>`` (``--base-url`` from ``BATCHRUN_BASE_URL``), so a
scheduled job can set them once. The token is read only from
``BATCHRUN_TOKEN`` or ``--token-file``: a value on the command line would be
visible to every user of the machine in the process list.
"""

from __future__ import annotations

import codecs
import json
import logging
import os
import shlex
import sys
import traceback
from collections.abc import Callable
from typing import Any, TypeVar

import click

from . import __version__
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
from .errors import EXIT_INTERRUPTED, BatchrunError, UsageError
from .profiles import Profile, current_profile, profile_options, resolve_token
from .sources import SourceOptions

F = TypeVar("F", bound=Callable[..., Any])


def env(name: str) -> str:
    """The environment variable that can set option ``name``."""
    return "BATCHRUN_" + name.upper().replace("-", "_")


def option(*names: str, **kwargs: Any) -> Callable[[F], F]:
    """A click option that can also come from its BATCHRUN_* variable."""
    long = next(n for n in names if n.startswith("--")).lstrip("-")
    if not kwargs.pop("one_off", False):  # one-off actions have no variable
        kwargs.setdefault("envvar", env(long))
        kwargs.setdefault("show_envvar", True)
    return click.option(*names, **kwargs)


def fail(error: BatchrunError) -> None:
    """Print a one-line error and exit with its code."""
    click.echo(f"batchrun: error: {error}", err=True)
    sys.exit(error.exit_code)


def split_list(value: str | None) -> tuple[str, ...] | None:
    """Parse "a,b,c" into names, or None when not given."""
    if value is None:
        return None
    names = tuple(name.strip() for name in value.split(",") if name.strip())
    return names


def parse_pairs(
    option_name: str, values: tuple[str, ...]
) -> tuple[tuple[str, str], ...]:
    """Parse repeated NAME=VALUE options."""
    pairs = []
    for value in values:
        name, sep, rest = value.partition("=")
        if not sep or not name.strip():
            raise UsageError(
                f"{option_name} {value!r} is not NAME=VALUE; for example "
                f"{option_name} campaign=spring"
            )
        pairs.append((name.strip(), rest))
    return tuple(pairs)


def read_token(token_file: str | None, profile: Profile | None = None) -> Secret:
    """The bearer token from --token-file, BATCHRUN_TOKEN or the profile."""
    if token_file:
        try:
            with open(token_file, encoding="utf-8") as file:
                value = file.read().strip()
        except OSError as exc:
            raise UsageError(
                f"--token-file {token_file}: cannot read it ({exc.strerror})"
            ) from None
        if not value:
            raise UsageError(f"--token-file {token_file} is empty")
        return checked_token(value, f"--token-file {token_file}")
    value = os.environ.get("BATCHRUN_TOKEN", "").strip()
    if value:
        return checked_token(value, "BATCHRUN_TOKEN")
    token = resolve_token(profile, os.environ)
    if token is None:
        raise UsageError(
            "no token: set the environment variable BATCHRUN_TOKEN, pass "
            "--token-file PATH, or name token_env or token_file in a profile "
            "(a token is never accepted on the command line)"
        )
    return token


def checked_token(value: str, where: str) -> Secret:
    """A token must be one word of printable characters."""
    if any(c.isspace() or not c.isprintable() for c in value):
        raise UsageError(
            f"the token from {where} contains spaces, line breaks or control "
            "characters; it must hold only the token"
        )
    return Secret(value)


def resume_command() -> str:
    """The command that continues this run: the same one, minus --restart."""
    args = [arg for arg in sys.argv[1:] if arg != "--restart"]
    return shlex.join(["batchrun", *args])


def input_options(function: F) -> F:
    """The options that say how rows are read and become variables."""
    decorators = [
        option(
            "--empty",
            type=click.Choice(["text", "null", "omit"]),
            default="text",
            show_default=True,
            help='Send an empty cell as "", as null, or leave the variable out.',
        ),
        option(
            "--format",
            "fmt",
            help="Input format (csv, tsv, jsonl, parquet, xlsx) if not by extension.",
        ),
        option(
            "--encoding",
            help="Input text encoding, e.g. cp1252 (default: UTF-8, strictly).",
        ),
        option("--delimiter", help="CSV delimiter (default: detected)."),
        option("--sheet", help="Excel sheet name (default: the first sheet)."),
        option(
            "--columns",
            help="Send only these columns, e.g. --columns first_name,phone.",
        ),
        option(
            "--rename",
            multiple=True,
            help="Send a column under another name: COLUMN=VARIABLE (repeatable).",
        ),
        option(
            "--set",
            "constants",
            multiple=True,
            help="Add a constant variable to every row: NAME=VALUE (repeatable).",
        ),
        option(
            "--require",
            help="Variables each row must have non-empty; other rows are invalid.",
        ),
        option("--row-id-var", help="Also send the row's stable id as this variable."),
        option(
            "--key-column",
            help="Identify rows by this column instead of their position.",
        ),
        option("--limit", type=int, help="Process at most this many rows."),
        option("--offset", type=int, default=0, help="Skip this many data rows first."),
    ]
    for decorator in reversed(decorators):
        function = decorator(function)
    return function


def raw_option(args: list[str], name: str) -> str | None:
    """The value of ``name`` in unparsed arguments (``--x V`` or ``--x=V``)."""
    for index, arg in enumerate(args):
        if arg == name and index + 1 < len(args):
            return args[index + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


class RunCommand(click.Command):
    """`run`, whose own usage errors also honour --summary-json and --log-format.

    Click rejects a malformed option value before the command starts; a
    scheduled job still gets its summary file and JSON error line.
    """

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        raw = list(args)
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as error:
            message = error.format_message()
            path = raw_option(raw, "--summary-json") or os.environ.get(
                env("summary_json")
            )
            write_summary_json(path, {"exit_code": 2, "error": message})
            log_format = raw_option(raw, "--log-format") or os.environ.get(
                env("log_format")
            )
            if log_format == "json":
                from .progress import JsonEvents

                JsonEvents().emit("error", message=message, exit_code=2)
                ctx.exit(2)
            raise


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="batchrun")
def main() -> None:
    """Run a hosted flow once for every row of a data file.

    Reads CSV, TSV, JSONL, Parquet or Excel rows, executes the flow for each
    row through the platform's execute operation, and records every row's
    outcome (status, session id, error) in an output file that also lets a
    killed run resume where it stopped.
    """


@main.command(cls=RunCommand)
@click.argument("input_path", metavar="INPUT", type=click.Path(dir_okay=False))
@profile_options
@option(
    "-o",
    "--output",
    required=False,
    help="Results file: .csv, .jsonl, .parquet or .xlsx.",
)
@option(
    "--base-url",
    required=False,
    help="The platform's API gateway, e.g. https://gw.example.com.",
)
@option("--org", help="Organisation id (a path segment).")
@option("--flow", required=False, help="Flow id (a path segment).")
@option(
    "--token-file",
    type=click.Path(dir_okay=False),
    help="File holding the bearer token (else BATCHRUN_TOKEN is used).",
)
@option(
    "--concurrency",
    type=int,
    default=DEFAULT_CONCURRENCY,
    show_default=True,
    help="Requests in flight at most.",
)
@option(
    "--rate", help="Ceiling on requests sent, e.g. 20/s or 600/min (default: none)."
)
@option(
    "--burst",
    type=int,
    default=DEFAULT_BURST,
    show_default=True,
    help="Requests that may go at once before --rate spacing applies.",
)
@option(
    "--timeout",
    type=float,
    default=DEFAULT_READ_TIMEOUT,
    show_default=True,
    help="Seconds to wait for a flow's answer (read timeout).",
)
@option(
    "--connect-timeout",
    type=float,
    default=DEFAULT_CONNECT_TIMEOUT,
    show_default=True,
    help="Seconds to wait for a connection.",
)
@option(
    "--max-attempts",
    type=int,
    default=DEFAULT_MAX_ATTEMPTS,
    show_default=True,
    help="Attempts per row for transient errors (429, 5xx, network).",
)
@option(
    "--max-retry-wait",
    type=float,
    default=DEFAULT_MAX_RETRY_WAIT,
    show_default=True,
    help="Longest wait honoured for one retry; a longer Retry-After fails the row.",
)
@option(
    "--max-consecutive-failures",
    type=int,
    default=DEFAULT_MAX_CONSECUTIVE_FAILURES,
    show_default=True,
    help="Abort (exit 3) after this many failed rows in a row.",
)
@option(
    "--include-input",
    is_flag=True,
    help="Put each row's input values in the output, before the result columns.",
)
@input_options
@option(
    "--restart",
    is_flag=True,
    one_off=True,
    help="Start over; the old output is kept under a new name.",
)
@option(
    "--retry-failed",
    is_flag=True,
    one_off=True,
    help="Send again only the rows whose last status is failed.",
)
@option(
    "--in-doubt",
    type=click.Choice(["resend", "skip"]),
    default="resend",
    show_default=True,
    help="Rows sent but unanswered when a run died: send again, or record unknown.",
)
@option(
    "--no-resend",
    is_flag=True,
    help="After a read timeout or lost connection, record unknown; do not retry.",
)
@option(
    "--grace",
    type=float,
    default=DEFAULT_GRACE,
    show_default=True,
    help="Seconds in-flight requests get to finish after Ctrl-C or SIGTERM.",
)
@option(
    "--failed-out",
    type=click.Path(dir_okay=False),
    help="Where to write the failed and invalid rows as input "
    "(default: OUTPUT's name with .failed.csv or .failed.jsonl).",
)
@option(
    "--ca-bundle",
    type=click.Path(dir_okay=False, exists=True),
    help="Extra CA certificates (PEM) to trust.",
)
@option(
    "--allow-insecure-http",
    is_flag=True,
    help="Allow plain http to hosts other than loopback.",
)
@option(
    "--dry-run",
    is_flag=True,
    one_off=True,
    help="Check the input as `batchrun check` does; send nothing.",
)
@option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="json: one JSON object per line on stderr (start, notices, summary).",
)
@option(
    "--summary-json",
    type=click.Path(dir_okay=False),
    help="Also write the final counts and exit code to this JSON file.",
)
@option("-q", "--quiet", is_flag=True, help="No progress bar.")
@option(
    "-v", "--verbose", is_flag=True, help="Show internal details of unexpected errors."
)
def run(input_path: str, **options: Any) -> None:
    """Execute the flow once for each row of INPUT and record the outcomes.

    Running the same command again resumes: rows already recorded are not
    sent again. Exit codes: 0 every row succeeded, 1 some rows failed or were
    invalid, 2 usage or input error, 3 aborted, 130 interrupted (resumable).
    """
    from .progress import ConsoleEvents, JsonEvents
    from .runner import Runner

    verbose = options["verbose"]
    if options["dry_run"]:
        run_check(input_path, options, lambda: dry_run_reading(input_path, options))
    json_logs = options["log_format"] == "json"
    if verbose:
        logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)
    events: ConsoleEvents = (
        JsonEvents() if json_logs else ConsoleEvents(quiet=options["quiet"])
    )
    summary_path = options["summary_json"]
    try:
        config = build_config(input_path, options)
        events.configured(config)
        summary = Runner(config, events).run()
    except BatchrunError as error:
        events.close()
        write_summary_json(
            summary_path, {"exit_code": error.exit_code, "error": str(error)}
        )
        if isinstance(events, JsonEvents):
            events.emit("error", message=str(error), exit_code=error.exit_code)
            sys.exit(error.exit_code)
        fail(error)
        return
    except KeyboardInterrupt:
        events.close()
        click.echo("batchrun: interrupted before the run started", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except Exception as exc:  # a bug: say so in one line unless asked for more
        events.close()
        if verbose:
            traceback.print_exc()
        message = f"internal error: {type(exc).__name__}: {exc}"
        write_summary_json(summary_path, {"exit_code": 1, "error": message})
        click.echo(f"batchrun: {message} (run with --verbose for details)", err=True)
        sys.exit(1)
    write_summary_json(summary_path, summary.as_dict())
    if isinstance(events, JsonEvents):
        events.emit("summary", **summary.as_dict())
    else:
        print_summary(summary)
    sys.exit(summary.exit_code)


def write_summary_json(path: str | None, data: dict[str, Any]) -> None:
    """--summary-json: the final counts and exit code, written atomically."""
    if not path:
        return
    temporary = path + ".tmp"
    try:
        with open(temporary, "w", encoding="utf-8") as file:
            json.dump(data, file, indent=2)
            file.write("\n")
        os.replace(temporary, path)
    except OSError as exc:
        click.echo(
            f"batchrun: warning: cannot write --summary-json {path} ({exc.strerror})",
            err=True,
        )


def build_reading(o: dict[str, Any]) -> tuple[SourceOptions, Mapping]:
    """Validate the input and mapping options shared by `run` and `check`."""
    if o["limit"] is not None and o["limit"] < 1:
        raise UsageError("--limit must be at least 1")
    if o["offset"] < 0:
        raise UsageError("--offset must be 0 or more")
    mapping = Mapping(
        columns=split_list(o["columns"]),
        rename=parse_pairs("--rename", o["rename"]),
        constants=parse_pairs("--set", o["constants"]),
        require=split_list(o["require"]) or (),
        empty=o["empty"],
        row_id_var=o["row_id_var"],
    )
    delimiter = o["delimiter"]
    if delimiter is not None:
        delimiter = {"\\t": "\t", "tab": "\t"}.get(delimiter, delimiter)
        if len(delimiter) != 1:
            raise UsageError("--delimiter must be one character (or 'tab')")
    if o["encoding"]:
        try:
            codecs.lookup(o["encoding"])
        except LookupError:
            raise UsageError(
                f"--encoding {o['encoding']!r} is not an encoding Python knows; "
                "try utf-8, cp1252 or latin-1"
            ) from None
    source = SourceOptions(
        format=o["fmt"], encoding=o["encoding"], delimiter=delimiter, sheet=o["sheet"]
    )
    return source, mapping


def build_config(
    input_path: str, o: dict[str, Any], token: Secret | None = None
) -> RunConfig:
    """Validate the options and freeze them into a RunConfig.

    The token is read from --token-file, BATCHRUN_TOKEN or the profile unless
    one is given.
    """
    for name in ("output", "base_url", "org", "flow"):
        if not o[name]:
            flag = "--" + name.replace("_", "-")
            raise UsageError(f"missing {flag} (or set {env(name)}, or use a --profile)")
    base_url = check_base_url(
        o["base_url"], allow_insecure_http=o["allow_insecure_http"]
    )
    target = Target(
        base_url,
        check_path_segment("--org", o["org"]),
        check_path_segment("--flow", o["flow"]),
    )
    if o["grace"] < 0:
        raise UsageError("--grace must be 0 or more seconds")
    source, mapping = build_reading(o)
    return RunConfig(
        input=input_path,
        output=o["output"],
        target=target,
        token=token or read_token(o["token_file"], current_profile()),
        source=source,
        mapping=mapping,
        concurrency=o["concurrency"],
        rate=parse_rate(o["rate"]) if o["rate"] else None,
        burst=o["burst"],
        connect_timeout=o["connect_timeout"],
        read_timeout=o["timeout"],
        max_attempts=o["max_attempts"],
        max_retry_wait=o["max_retry_wait"],
        max_consecutive_failures=o["max_consecutive_failures"],
        resend_in_doubt=not o["no_resend"],
        in_doubt=o["in_doubt"],
        include_input=o["include_input"],
        restart=o["restart"],
        retry_failed=o["retry_failed"],
        key_column=o["key_column"],
        grace=o["grace"],
        limit=o["limit"],
        offset=o["offset"],
        ca_bundle=o["ca_bundle"],
        failed_out=o["failed_out"],
    )


@main.command()
@click.argument("input_path", metavar="INPUT", type=click.Path(dir_okay=False))
@profile_options
@input_options
@option(
    "--show", type=int, default=3, show_default=True, help="Variable maps to print."
)
def check(input_path: str, **options: Any) -> None:
    """Dry run: read INPUT as `run` would, send nothing, report problems.

    Prints the row count, the columns and the variables they become, the
    first variable maps exactly as they would be sent, and every problem
    found. Exit codes: 0 clean, 1 some rows have problems, 2 the file cannot
    be used.
    """
    run_check(input_path, options, lambda: build_reading(options))


def dry_run_reading(
    input_path: str, options: dict[str, Any]
) -> tuple[SourceOptions, Mapping]:
    """Validate every run option as a real run would, except the token."""
    from .sinks import open_sink

    config = build_config(input_path, options, Secret("not-used-by-a-dry-run"))
    open_sink(config.output, ())  # an output extension batchrun can write
    return config.source, config.mapping


def run_check(
    input_path: str,
    options: dict[str, Any],
    reading: Callable[[], tuple[SourceOptions, Mapping]],
) -> None:
    """`check` and `run --dry-run`: validate, read INPUT, print, exit."""
    from .check import check_input

    try:
        source, mapping = reading()
        code = check_input(
            input_path,
            source,
            mapping,
            key_column=options["key_column"],
            limit=options["limit"],
            offset=options["offset"],
            show=options.get("show", 3),
        )
    except BatchrunError as error:
        fail(error)
        return
    except KeyboardInterrupt:
        click.echo("batchrun: check interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    sys.exit(code)


def print_summary(summary: Any) -> None:
    """The end-of-run lines on stderr."""
    s = summary
    lines = [
        f"batchrun: {s.read:,} rows read: {s.succeeded:,} succeeded, {s.failed:,} "
        f"failed, {s.invalid:,} invalid"
        + (f", {s.unknown:,} unknown" if s.unknown else "")
        + f" in {s.elapsed:.1f} s ({s.rows_per_second:,.0f} rows/s)"
    ]
    extra = []
    if s.skipped_done:
        extra.append(f"{s.skipped_done:,} skipped as already done")
    if s.in_doubt:
        extra.append(
            f"{s.in_doubt:,} in doubt after an interruption ({s.resent:,} sent again)"
        )
    if s.retries:
        extra.append(f"{s.retries:,} retries")
    if s.lost_answers:
        extra.append(
            f"{s.lost_answers:,} answers lost after the request was sent (read "
            "timeout or dropped connection: the flow may have run)"
        )
    if extra:
        lines.append("  " + "; ".join(extra))
    if s.resumed and s.totals:
        totals = ", ".join(
            f"{n:,} {status}" for status, n in sorted(s.totals.items()) if n
        )
        lines.append(f"  whole output so far: {totals}")
    lines.append(f"  output: {s.output}")
    if s.failed_out:
        lines.append(
            f"  failed and invalid rows, ready to fix and run again: {s.failed_out}"
        )
    if s.aborted:
        lines.append(f"  aborted: {s.aborted}")
    if s.interrupted or s.aborted:
        lines.append(f"  to resume, run: {resume_command()}")
    for line in lines:
        click.echo(line, err=True)


def _register_commands() -> None:
    from .report import report
    from .service.command import serve

    main.add_command(serve)
    main.add_command(report)


_register_commands()
