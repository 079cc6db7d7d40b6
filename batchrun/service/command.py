"""The `batchrun serve` command: options in, a ServiceConfig out, then run."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ..config import Secret
from ..errors import BatchrunError, UsageError
from .app import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    DEFAULT_RETRY_AFTER,
    DEFAULT_SLOW_MS,
    TOKEN_ENV,
    Faults,
    ServiceConfig,
    is_loopback,
    load_flows,
    parse_latency,
    run,
)

_RATE = click.FloatRange(0.0, 1.0)


@click.command("serve")
@click.option(
    "--host", default=DEFAULT_HOST, show_default=True, help="Address to bind."
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=DEFAULT_PORT,
    show_default=True,
    metavar="PORT",
    help="Port to bind; 0 picks a free one.",
)
@click.option(
    "--token",
    envvar=TOKEN_ENV,
    help=f"The only bearer token accepted (or set {TOKEN_ENV}); without one, "
    "any non-empty bearer token is accepted.",
)
@click.option(
    "--flows",
    type=click.Path(dir_okay=False, path_type=Path),
    help="JSON file of known flows and their required variables; without one, "
    "every org and flow exists and requires nothing.",
)
@click.option(
    "--latency",
    default="0",
    show_default=True,
    metavar="MS|MIN-MAX",
    help="How long an execution takes, in ms: fixed, or uniform in a range.",
)
@click.option(
    "--fail-rate",
    type=_RATE,
    default=0.0,
    metavar="P",
    help="Share of executions answered 500, from 0 to 1.",
)
@click.option(
    "--throttle-rate",
    type=_RATE,
    default=0.0,
    metavar="P",
    help="Share of executions answered 429 with Retry-After.",
)
@click.option(
    "--retry-after",
    type=click.IntRange(min=0),
    default=DEFAULT_RETRY_AFTER,
    show_default=True,
    metavar="SECONDS",
    help="Retry-After seconds sent with the injected 429.",
)
@click.option(
    "--drop-rate",
    type=_RATE,
    default=0.0,
    metavar="P",
    help="Share of executions whose connection is closed with no answer.",
)
@click.option(
    "--slow-rate",
    type=_RATE,
    default=0.0,
    metavar="P",
    help="Share of executions that take --slow-ms longer.",
)
@click.option(
    "--slow-ms",
    type=click.FloatRange(min=0),
    default=DEFAULT_SLOW_MS,
    show_default=True,
    metavar="MS",
    help="Extra time a slow execution takes.",
)
@click.option(
    "--max-rate",
    type=click.IntRange(min=1),
    metavar="N",
    help="Answer 429 (Retry-After 1) beyond N requests in any one second.",
)
@click.option("--seed", type=int, help="Seed for latency and faults, to repeat a run.")
@click.option(
    "--log",
    "log_path",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="Write one JSON line per request to this file (replaced if it exists).",
)
def serve(
    host: str,
    port: int,
    token: str | None,
    flows: Path | None,
    latency: str,
    fail_rate: float,
    throttle_rate: float,
    retry_after: int,
    drop_rate: float,
    slow_rate: float,
    slow_ms: float,
    max_rate: int | None,
    seed: int | None,
    log_path: Path | None,
) -> None:
    """Run a local stand-in of the flow execution service.

    It speaks the same contract as the hosted service, so a batch can be
    rehearsed with no platform account. Stop it with Ctrl-C or SIGTERM.
    """
    try:
        if token is not None and not token.strip():
            raise UsageError(
                f"--token is empty; give a token, or omit it (and unset {TOKEN_ENV}) "
                "to accept any bearer token"
            )
        config = ServiceConfig(
            host=host,
            port=port,
            token=Secret(token) if token else None,
            flows=load_flows(flows) if flows else None,
            latency=parse_latency(latency),
            faults=Faults(
                fail_rate=fail_rate,
                throttle_rate=throttle_rate,
                drop_rate=drop_rate,
                slow_rate=slow_rate,
                slow_ms=slow_ms,
                retry_after=retry_after,
            ),
            max_rate=max_rate,
            seed=seed,
            log_path=log_path,
        )
        if not is_loopback(host):
            click.echo(
                f"batchrun serve: warning: {host} may be reachable from other "
                "machines; this service is meant for local rehearsal only",
                err=True,
            )
        received = run(config, _announce)
    except BatchrunError as exc:
        click.echo(f"Error: {exc.message}", err=True)
        sys.exit(exc.exit_code)
    click.echo(f"batchrun serve: stopped after {received} request(s)", err=True)


def _announce(url: str) -> None:
    click.echo(f"batchrun serve: listening on {url}")
    sys.stdout.flush()
