"""Reading the profile file: one TOML file, checked key by key.

The file (``batchrun.toml`` or ``--config PATH``; the package docstring shows
one) holds a ``[defaults]`` table and ``[profiles.NAME]`` tables. Keys are
long option names, spelt with ``-`` or ``_``. A profile may set every option
an environment variable may set; one-off actions such as --restart,
--retry-failed and --dry-run are not options a profile can keep. The
``[defaults]`` table applies whenever the file is read, with or without
--profile, and the chosen profile's keys replace its keys.

``load_profile`` checks every key and value against the command's click
parameters and returns a ``Profile``. A key named token, bearer, secret,
password or api_key anywhere in the file is refused.

Note: relative paths in the file are relative to the working directory, not to
the file; ``~`` is expanded in token_file and in path options such as output.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import click

from ..errors import UsageError

CONFIG_FILE = "batchrun.toml"
COMMA_LIST_OPTIONS = frozenset({"columns", "require"})
# Options that name a file although the CLI declares them as plain strings.
PATH_OPTIONS = frozenset({"output"})
SECRET_KEYS = frozenset({"api_key", "bearer", "password", "secret", "token"})
TOKEN_KEYS = ("token_env", "token_file")

# Parameters a profile never sets as options: two choose the profile, and the
# token file is ranked by resolve_token so that BATCHRUN_TOKEN still beats it.
_NOT_PROFILE_OPTIONS = frozenset({"config", "profile", "token_file"})
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+\Z")
_TOML_POSITION = re.compile(r"(?s)(.*) \(at line (\d+), column (\d+)\)\Z")


@dataclass(frozen=True, slots=True)
class Profile:
    """What the profile file gives one command: option defaults, a token source."""

    path: str
    name: str | None
    default_map: dict[str, Any]
    token_env: str | None = None
    token_file: str | None = None
    token_origin: str = "[defaults]"  # the table that named the token source


@dataclass(frozen=True, slots=True)
class _Table:
    """One validated table of the file, keyed by click parameter name."""

    where: str
    values: dict[str, Any]
    token_env: str | None
    token_file: str | None


def load_profile(
    config_path: str | None,
    profile: str | None,
    command_params: Iterable[click.Parameter],
    *,
    known_params: Iterable[click.Parameter] = (),
) -> Profile | None:
    """Read the profile file and return what it gives a command.

    None when no --config is given and there is no batchrun.toml. Keys of
    ``known_params`` (options of sibling commands) are checked but not applied.
    """
    path = _locate(config_path, profile)
    if path is None:
        return None
    document = _read(path)
    _refuse_secrets(path, document, ())

    command_params = list(command_params)
    keys = _option_keys([*command_params, *known_params])
    defaults, profiles = _split_tables(path, document)
    base = _parse_table(path, "[defaults]", defaults, keys)
    tables = {
        name: _parse_table(path, f"[profiles.{_key(name)}]", table, keys)
        for name, table in profiles.items()
    }

    if profile is not None and profile not in tables:
        listed = ", ".join(sorted(tables)) or "none; add a [profiles.NAME] table"
        raise UsageError(
            f"--profile {profile}: {path} has no such profile; it has: {listed}"
        )
    chosen = [base] if profile is None else [base, tables[profile]]
    return _merge(path, profile, chosen, command_params)


def _locate(config_path: str | None, profile: str | None) -> str | None:
    """The file to read, or None when there is none and none is needed."""
    if config_path is not None:
        if not os.path.exists(config_path):
            raise UsageError(
                f"--config {config_path}: no such file; check the path, or leave "
                f"--config out to use ./{CONFIG_FILE}"
            )
        return config_path
    if os.path.exists(CONFIG_FILE):
        return CONFIG_FILE
    if profile is not None:
        raise UsageError(
            f"--profile {profile}: there is no {CONFIG_FILE} in {os.getcwd()}; "
            f"create one with a [profiles.{_key(profile)}] table or pass --config PATH"
        )
    return None


def _read(path: str) -> dict[str, Any]:
    """The parsed TOML document, or a UsageError saying where it is wrong."""
    try:
        with open(path, "rb") as file:
            return tomllib.load(file)
    except OSError as exc:
        raise UsageError(f"{path}: cannot read it ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not UTF-8 text; save it as UTF-8") from None
    except tomllib.TOMLDecodeError as exc:
        found = _TOML_POSITION.match(str(exc))
        if found is None:
            raise UsageError(f"{path}: not valid TOML: {exc}") from None
        what, line, column = found.groups()
        raise UsageError(
            f"{path}: line {line}, column {column}: not valid TOML: {what}"
        ) from None


def _refuse_secrets(path: str, node: object, trail: tuple[str, ...]) -> None:
    """Raise if any key anywhere in ``node`` is named like a credential."""
    if isinstance(node, dict):
        for key, value in node.items():
            here = (*trail, key)
            if _is_secret_name(key):
                raise _secret_error(path, "key " + ".".join(_key(k) for k in here))
            _refuse_secrets(path, value, here)
    elif isinstance(node, list):
        for item in node:
            _refuse_secrets(path, item, trail)


def _is_secret_name(name: str) -> bool:
    return name.strip().lower().replace("-", "_") in SECRET_KEYS


def _secret_error(path: str, what: str) -> UsageError:
    # The value is never quoted: it may be the credential itself.
    return UsageError(
        f"{path}: {what} looks like a credential, and a token never goes in the "
        'config file; put it in an environment variable and write token_env = "NAME", '
        'or in a file and write token_file = "PATH"'
    )


def _split_tables(
    path: str, document: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The [defaults] table and the [profiles.NAME] tables, checked for shape."""
    for key in document:
        if key not in ("defaults", "profiles"):
            raise UsageError(
                f"{path}: unknown top-level key {_key(key)}; the file holds a "
                "[defaults] table and [profiles.NAME] tables"
            )
    defaults = document.get("defaults", {})
    if not isinstance(defaults, dict):
        raise UsageError(f"{path}: defaults must be a table; write [defaults]")
    profiles = document.get("profiles", {})
    if not isinstance(profiles, dict):
        raise UsageError(f"{path}: profiles must be tables; write [profiles.NAME]")
    for name, table in profiles.items():
        if not isinstance(table, dict):
            raise UsageError(
                f"{path}: profiles.{_key(name)} must be a table; "
                f"write [profiles.{_key(name)}]"
            )
    return defaults, profiles


def _option_keys(params: Iterable[click.Parameter]) -> dict[str, click.Option]:
    """Profile key (long option name with _) -> the option it sets."""
    keys: dict[str, click.Option] = {}
    for param in params:
        if (
            not isinstance(param, click.Option)
            or not param.envvar
            or param.name in _NOT_PROFILE_OPTIONS
        ):
            continue
        for name in param.opts:
            if name.startswith("--"):
                keys.setdefault(name[2:].replace("-", "_"), param)
    return keys


def _parse_table(
    path: str, where: str, table: dict[str, Any], keys: dict[str, click.Option]
) -> _Table:
    """Check one table's keys and values and convert them for click."""
    values: dict[str, Any] = {}
    tokens: dict[str, str] = {}
    spelt: dict[str, str] = {}
    for raw_key, value in table.items():
        key = raw_key.replace("-", "_")
        if key in spelt:
            raise UsageError(
                f"{path}: {where} sets both {spelt[key]} and {raw_key}; keep one"
            )
        spelt[key] = raw_key

        if key in TOKEN_KEYS:
            tokens[key] = _token_source(path, where, key, value)
        elif key in keys:
            option = keys[key]
            values[str(option.name)] = _convert(path, where, key, option, value)
        else:
            raise _unknown_key(path, where, raw_key, keys)

    if len(tokens) == len(TOKEN_KEYS):
        raise UsageError(f"{path}: {where} sets token_env and token_file; keep one")
    return _Table(where, values, tokens.get("token_env"), tokens.get("token_file"))


def _unknown_key(
    path: str, where: str, raw_key: str, keys: dict[str, click.Option]
) -> UsageError:
    valid = sorted([*keys, *TOKEN_KEYS])
    close = difflib.get_close_matches(raw_key.replace("-", "_"), valid, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return UsageError(
        f"{path}: {where} has unknown key {_key(raw_key)}{hint}; "
        f"valid keys: {', '.join(valid)}"
    )


def _token_source(path: str, where: str, key: str, value: object) -> str:
    """A checked token_env name or an expanded token_file path."""
    if not isinstance(value, str):
        raise UsageError(f"{path}: {where} {key} must be a string, not {_kind(value)}")
    if not value.strip():
        raise UsageError(f"{path}: {where} {key} must not be empty")
    if key == "token_file":
        return os.path.expanduser(value)
    # The value is not quoted back: a token pasted here by mistake stays unseen.
    if not _ENV_NAME.match(value):
        raise UsageError(
            f"{path}: {where} token_env must be the name of an environment "
            "variable (letters, digits and _), not the token itself; "
            'for example token_env = "ACME_TOKEN"'
        )
    return value


def _convert(
    path: str, where: str, key: str, option: click.Option, value: object
) -> Any:
    """A TOML value as click expects it from default_map, or a UsageError."""

    def wrong(expected: str, example: str) -> UsageError:
        return UsageError(
            f"{path}: {where} {key} must be {expected}, not {_kind(value)}; "
            f"for example {key} = {example}"
        )

    kind = option.type
    if option.multiple:
        return _pairs(path, where, key, value)
    if option.is_flag or isinstance(kind, click.types.BoolParamType):
        if isinstance(value, bool):
            return value
        raise wrong("true or false", "true")
    if isinstance(kind, click.types.IntParamType):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise wrong("an integer", "10")
    if isinstance(kind, click.types.FloatParamType):
        if isinstance(value, int | float) and not isinstance(value, bool):
            return value
        raise wrong("a number", "2.5")
    if isinstance(kind, click.Choice):
        return _choice(path, where, key, kind, value)

    if key in COMMA_LIST_OPTIONS:
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return ",".join(value)
        if not isinstance(value, str):
            raise wrong("a list of names", '["first_name", "phone"]')
    if not isinstance(value, str):
        raise wrong("a string", '"..."')
    if isinstance(kind, click.Path) or key in PATH_OPTIONS:
        return os.path.expanduser(value)
    return value


def _choice(
    path: str, where: str, key: str, kind: click.Choice[Any], value: object
) -> str:
    choices = [str(choice) for choice in kind.choices]
    if isinstance(value, str) and value in choices:
        return value
    given = repr(value) if isinstance(value, str) else _kind(value)
    raise UsageError(
        f"{path}: {where} {key} must be one of {', '.join(choices)}, not {given}"
    )


def _pairs(path: str, where: str, key: str, value: object) -> tuple[str, ...]:
    """A table or a list of NAME=VALUE strings as a repeated option's values."""
    if isinstance(value, dict):
        items = []
        for name, item in value.items():
            if isinstance(item, bool) or not isinstance(item, str | int | float):
                raise UsageError(
                    f"{path}: {where} {key}.{_key(name)} must be a string or a "
                    f"number, not {_kind(item)}"
                )
            items.append(f"{name}={item}")
        return tuple(items)

    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        for number, item in enumerate(value, start=1):
            name, sep, _ = item.partition("=")
            if _is_secret_name(name):
                raise _secret_error(path, f"{where} {key} item {_key(name.strip())}")
            # The item is not quoted back: without a NAME= it may be a secret.
            if not sep or not name.strip():
                raise UsageError(
                    f"{path}: {where} {key} item {number} is not NAME=VALUE; "
                    f'for example {key} = ["campaign=spring"]'
                )
        return tuple(value)

    raise UsageError(
        f'{path}: {where} {key} must be a table like {key} = {{ name = "value" }} '
        f'or a list like {key} = ["name=value"], not {_kind(value)}'
    )


def _merge(
    path: str,
    name: str | None,
    tables: list[_Table],
    command_params: list[click.Parameter],
) -> Profile:
    """Later tables win; only this command's parameters reach default_map."""
    values: dict[str, Any] = {}
    for table in tables:
        values.update(table.values)
    names = {param.name for param in command_params}
    default_map = {key: value for key, value in values.items() if key in names}

    # A table naming either token source replaces the sources of those before.
    token = next(
        (t for t in reversed(tables) if t.token_env or t.token_file), tables[0]
    )
    return Profile(
        path, name, default_map, token.token_env, token.token_file, token.where
    )


def _kind(value: object) -> str:
    """How TOML would describe the type of ``value``, for messages."""
    if isinstance(value, bool):
        return "true/false"
    for kind, text in (
        (int, "an integer"),
        (float, "a number"),
        (str, "a string"),
        (list, "a list"),
        (dict, "a table"),
    ):
        if isinstance(value, kind):
            return text
    return "a date or time"


def _key(name: str) -> str:
    """A key as TOML would spell it: bare when it can be, else quoted."""
    return name if _BARE_KEY.match(name) else '"' + name.replace('"', '\\"') + '"'
