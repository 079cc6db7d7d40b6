"""Profiles applied to a command: --config and --profile, and the token source.

``profile_options`` adds the two options to a click command. Whichever of
them click handles second loads the file and puts the profile's values in the
command's ``default_map``, which click consults after the command line and
the BATCHRUN_* variables and before the built-in defaults: that order is the
precedence. ``current_profile`` gives the loaded ``Profile`` to the command.

A token never goes in the file: ``resolve_token`` reads it from the
environment variable (``token_env``) or the file (``token_file``) the profile
names, ranked below --token-file, BATCHRUN_TOKEN_FILE and BATCHRUN_TOKEN.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import IO, Any, TypeVar

import click

from ..config import Secret
from ..errors import EXIT_USAGE, UsageError
from .loading import CONFIG_FILE, Profile, load_profile

CONFIG_ENV = "BATCHRUN_CONFIG"
PROFILE_ENV = "BATCHRUN_PROFILE"
PROFILE_META_KEY = "batchrun.profile"
_PENDING_KEY = "batchrun.profiles.pending"

F = TypeVar("F", bound=Callable[..., Any])


def profile_default_map(
    config_path: str | None,
    profile: str | None,
    command_params: list[click.Parameter],
) -> dict[str, Any]:
    """The chosen profile as a click ``default_map`` for a command's parameters."""
    loaded = load_profile(config_path, profile, command_params)
    return {} if loaded is None else dict(loaded.default_map)


def resolve_token(profile: Profile | None, env: Mapping[str, str]) -> Secret | None:
    """The token the profile points at, or None when it points at none.

    Call it only once --token-file, BATCHRUN_TOKEN_FILE and BATCHRUN_TOKEN
    have come up empty, so the profile ranks below them as options do.
    """
    if profile is None:
        return None
    where = f"{profile.path}: {profile.token_origin}"
    if profile.token_env is not None:
        value = env.get(profile.token_env, "").strip()
        if not value:
            raise UsageError(
                f"{where} token_env names {profile.token_env}, which is not set "
                f"or empty; export {profile.token_env} or set BATCHRUN_TOKEN"
            )
        return Secret(value)
    if profile.token_file is not None:
        return _read_token_file(where, profile.token_file)
    return None


def current_profile(ctx: click.Context | None = None) -> Profile | None:
    """The profile loaded for the running command, if a file was read."""
    ctx = ctx or click.get_current_context(silent=True)
    found = None if ctx is None else ctx.meta.get(PROFILE_META_KEY)
    return found if isinstance(found, Profile) else None


def profile_options(function: F) -> F:
    """Add --config and --profile; the profile fills the command's default_map."""
    function = click.option(
        "--profile",
        metavar="NAME",
        envvar=PROFILE_ENV,
        show_envvar=True,
        is_eager=True,
        expose_value=False,
        callback=_on_option,
        help="Take option values from this profile of the config file.",
    )(function)
    function = click.option(
        "--config",
        metavar="PATH",
        envvar=CONFIG_ENV,
        show_envvar=True,
        is_eager=True,
        expose_value=False,
        callback=_on_option,
        help=f"Profile file (default: ./{CONFIG_FILE} if it exists).",
    )(function)
    return function


class _ProfileFailure(click.ClickException):
    """A profile error met while click parses, printed as batchrun prints errors."""

    exit_code = EXIT_USAGE

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"batchrun: error: {self.message}", file=file, err=True)


def _on_option(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> str | None:
    # Both options are eager, so both run before any other parameter takes its
    # value; whichever of the two runs second loads the file and fills
    # default_map, which click then consults below the BATCHRUN_* variables.
    pending = ctx.meta.setdefault(f"{_PENDING_KEY}.{id(ctx)}", {})
    pending[param.name] = value
    if len(pending) < 2 or ctx.resilient_parsing:
        return value

    try:
        loaded = load_profile(
            pending["config"],
            pending["profile"],
            ctx.command.params,
            known_params=_sibling_params(ctx),
        )
    except UsageError as error:
        raise _ProfileFailure(error.message) from None
    ctx.meta[PROFILE_META_KEY] = loaded
    if loaded is not None:
        ctx.default_map = {**(ctx.default_map or {}), **loaded.default_map}
    return value


def _sibling_params(ctx: click.Context) -> list[click.Parameter]:
    """Parameters of the other commands of the group that also take --profile."""
    group = ctx.parent.command if ctx.parent is not None else None
    if not isinstance(group, click.Group):
        return []
    params: list[click.Parameter] = []
    for command in group.commands.values():
        if command is not ctx.command and any(
            p.callback is _on_option for p in command.params
        ):
            params.extend(command.params)
    return params


def _read_token_file(where: str, token_file: str) -> Secret:
    try:
        with open(token_file, encoding="utf-8") as file:
            value = file.read().strip()
    except OSError as exc:
        raise UsageError(
            f"{where} token_file {token_file}: cannot read it ({exc.strerror})"
        ) from None
    if not value:
        raise UsageError(f"{where} token_file {token_file} is empty")
    return Secret(value)
