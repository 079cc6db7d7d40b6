"""Profiles: the TOML file, its checks, click precedence and the token source.

The commands under test carry the real parameters of `batchrun run` and
`batchrun check` plus --config and --profile, and print the values click
hands them, so precedence is checked against the options the CLI declares.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result

from batchrun import cli
from batchrun.config import DEFAULT_CONCURRENCY, Secret
from batchrun.errors import EXIT_USAGE, UsageError
from batchrun.profiles import (
    CONFIG_FILE,
    Profile,
    current_profile,
    load_profile,
    profile_default_map,
    profile_options,
    resolve_token,
)

NIGHTLY = """
[defaults]
base_url = "https://defaults.example.com"
org = "default-org"

[profiles.nightly]
base_url = "https://gw.example.com"
flow = "welcome"
rate = "20/s"
concurrency = 64
columns = ["first_name", "phone"]
rename = { first = "first_name" }
set = { campaign = "spring", wave = 2 }
require = ["phone"]
include-input = true
token_env = "ACME_TOKEN"

[profiles.staging]
base-url = "https://staging.example.com"
"""

SECRET_VALUE = "s3cr3t-value-never-shown"


def _mirror(command: click.Command) -> click.Command:
    """A command with ``command``'s parameters that prints what click gives it."""
    params = [p for p in command.params if p.name not in ("config", "profile")]

    def show(**options: Any) -> None:
        ctx = click.get_current_context()
        profile = current_profile()
        try:
            secret = resolve_token(profile, os.environ)
            token = None if secret is None else secret.reveal()
        except UsageError as error:
            token = f"error: {error}"
        sources = {name: ctx.get_parameter_source(name).name for name in options}
        click.echo(
            json.dumps(
                {
                    "options": options,
                    "sources": sources,
                    "profile": None if profile is None else profile.name,
                    "token": token,
                }
            )
        )

    return profile_options(click.Command(command.name, params=params, callback=show))


APP = click.Group("batchrun", commands=[_mirror(cli.run), _mirror(cli.check)])


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working directory, with no BATCHRUN_* variables about."""
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith("BATCHRUN_") or name == "ACME_TOKEN":
            monkeypatch.delenv(name)
    return tmp_path


def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(APP, list(args), env=env)


def shown(result: Result) -> dict[str, Any]:
    assert result.exit_code == 0, result.output
    value: dict[str, Any] = json.loads(result.stdout)
    return value


def error_of(result: Result) -> str:
    assert result.exit_code == EXIT_USAGE, result.output
    assert result.stdout == ""
    line: str = result.stderr
    assert line.startswith("batchrun: error: ") and line.count("\n") == 1
    return line[len("batchrun: error: ") : -1]


def write(workdir: Path, text: str, name: str = CONFIG_FILE) -> Path:
    path = workdir / name
    path.write_text(text, encoding="utf-8")
    return path


# ------------------------------------------------------------------ values


def test_profile_values_reach_the_command_as_click_values(workdir: Path) -> None:
    write(workdir, NIGHTLY)

    out = shown(invoke("run", "in.csv", "--profile", "nightly"))

    options = out["options"]
    assert options["base_url"] == "https://gw.example.com"
    assert options["org"] == "default-org"
    assert options["flow"] == "welcome"
    assert options["rate"] == "20/s"
    assert options["concurrency"] == 64
    assert options["columns"] == "first_name,phone"
    assert options["rename"] == ["first=first_name"]
    assert options["constants"] == ["campaign=spring", "wave=2"]
    assert options["require"] == "phone"
    assert options["include_input"] is True
    assert out["sources"]["flow"] == "DEFAULT_MAP"
    assert out["profile"] == "nightly"


def test_profile_values_in_string_and_list_forms(workdir: Path) -> None:
    write(
        workdir,
        """
        [profiles.p]
        columns = "first_name,phone"
        rename = ["first=first_name"]
        set = ["campaign=spring"]
        format = "tsv"
        timeout = 30
        empty = "null"
        """,
    )

    options = shown(invoke("run", "in.csv", "--profile", "p"))["options"]

    assert options["columns"] == "first_name,phone"
    assert options["rename"] == ["first=first_name"]
    assert options["constants"] == ["campaign=spring"]
    assert options["fmt"] == "tsv"
    assert options["timeout"] == 30.0
    assert options["empty"] == "null"


def test_dash_and_underscore_spellings_are_the_same_key(workdir: Path) -> None:
    write(workdir, NIGHTLY)

    options = shown(invoke("run", "in.csv", "--profile", "staging"))["options"]

    assert options["base_url"] == "https://staging.example.com"


def test_defaults_table_applies_without_a_profile(workdir: Path) -> None:
    write(workdir, NIGHTLY)

    out = shown(invoke("run", "in.csv"))

    assert out["options"]["base_url"] == "https://defaults.example.com"
    assert out["options"]["concurrency"] == DEFAULT_CONCURRENCY
    assert out["profile"] is None


def test_no_file_and_no_profile_change_nothing(workdir: Path) -> None:
    out = shown(invoke("run", "in.csv"))

    assert out["options"]["base_url"] is None
    assert out["options"]["concurrency"] == DEFAULT_CONCURRENCY
    assert out["sources"]["concurrency"] == "DEFAULT"


def test_profile_chosen_by_environment_variable(workdir: Path) -> None:
    write(workdir, NIGHTLY)

    out = shown(invoke("run", "in.csv", env={"BATCHRUN_PROFILE": "nightly"}))

    assert out["options"]["flow"] == "welcome"


@pytest.mark.parametrize("how", ["option", "env"])
def test_config_names_another_file(workdir: Path, how: str) -> None:
    path = write(workdir, NIGHTLY, name="team.toml")
    args = ["run", "in.csv", "--profile", "nightly"]
    env = {}
    if how == "option":
        args[2:2] = ["--config", str(path)]
    else:
        env["BATCHRUN_CONFIG"] = str(path)

    out = shown(invoke(*args, env=env))

    assert out["options"]["flow"] == "welcome"


def test_config_after_profile_on_the_command_line(workdir: Path) -> None:
    path = write(workdir, NIGHTLY, name="team.toml")

    out = shown(invoke("run", "--profile", "nightly", "in.csv", "--config", str(path)))

    assert out["options"]["flow"] == "welcome"


def test_keys_of_other_commands_are_accepted_but_not_applied(workdir: Path) -> None:
    write(
        workdir,
        '[profiles.p]\nbase_url = "https://gw.example.com"\nshow = 5\n'
        'columns = "phone"\n',
    )

    check = shown(invoke("check", "in.csv", "--profile", "p"))["options"]
    run = shown(invoke("run", "in.csv", "--profile", "p"))["options"]

    assert (check["columns"], check["show"]) == ("phone", 5)
    assert "base_url" not in check
    assert (run["columns"], run["base_url"]) == ("phone", "https://gw.example.com")
    assert "show" not in run


def test_path_options_expand_home(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(workdir))
    (workdir / "ca.pem").write_text("", encoding="utf-8")
    write(
        workdir,
        '[profiles.p]\noutput = "~/out.csv"\nca_bundle = "~/ca.pem"\nflow = "~x"\n',
    )

    options = shown(invoke("run", "in.csv", "--profile", "p"))["options"]

    assert options["output"] == str(workdir / "out.csv")
    assert options["ca_bundle"] == str(workdir / "ca.pem")
    assert options["flow"] == "~x"


# ------------------------------------------------------------------ precedence


@pytest.mark.parametrize(
    ("args", "env", "concurrency", "source"),
    [
        ((), {}, 64, "DEFAULT_MAP"),
        ((), {"BATCHRUN_CONCURRENCY": "16"}, 16, "ENVIRONMENT"),
        (("--concurrency", "8"), {"BATCHRUN_CONCURRENCY": "16"}, 8, "COMMANDLINE"),
        (("--concurrency", "8"), {}, 8, "COMMANDLINE"),
    ],
)
def test_precedence_command_line_then_env_then_profile(
    workdir: Path,
    args: tuple[str, ...],
    env: dict[str, str],
    concurrency: int,
    source: str,
) -> None:
    write(workdir, NIGHTLY)

    out = shown(invoke("run", "in.csv", "--profile", "nightly", *args, env=env))

    assert out["options"]["concurrency"] == concurrency
    assert out["sources"]["concurrency"] == source


def test_precedence_profile_over_builtin_default(workdir: Path) -> None:
    write(workdir, "[profiles.p]\nconcurrency = 3\n")

    with_profile = shown(invoke("run", "in.csv", "--profile", "p"))["options"]
    without = shown(invoke("run", "in.csv"))["options"]

    assert with_profile["concurrency"] == 3
    assert without["concurrency"] == DEFAULT_CONCURRENCY


def test_precedence_env_beats_profile_for_repeated_and_flag_options(
    workdir: Path,
) -> None:
    write(workdir, NIGHTLY)
    env = {"BATCHRUN_SET": "campaign=autumn", "BATCHRUN_INCLUDE_INPUT": "false"}

    options = shown(invoke("run", "in.csv", "--profile", "nightly", env=env))["options"]

    assert options["constants"] == ["campaign=autumn"]
    assert options["include_input"] is False


def test_precedence_profile_beats_defaults_table(workdir: Path) -> None:
    write(workdir, NIGHTLY)

    nightly = shown(invoke("run", "in.csv", "--profile", "nightly"))["options"]
    plain = shown(invoke("run", "in.csv"))["options"]

    assert nightly["base_url"] == "https://gw.example.com"
    assert plain["base_url"] == "https://defaults.example.com"


# ------------------------------------------------------------------ tokens


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("[profiles.p]\ntoken = '{v}'\n", "key profiles.p.token"),
        ("[profiles.p]\nBearer = '{v}'\n", "key profiles.p.Bearer"),
        ("[defaults]\nSECRET = '{v}'\n", "key defaults.SECRET"),
        ("[profiles.p]\npassword = '{v}'\n", "key profiles.p.password"),
        ("[profiles.p]\napi-key = '{v}'\n", "key profiles.p.api-key"),
        ("[profiles.p]\nset = {{ api_key = '{v}' }}\n", "key profiles.p.set.api_key"),
        ("token = '{v}'\n", "key token"),
        ("[profiles.p]\nset = ['password={v}']\n", "[profiles.p] set item password"),
    ],
)
def test_credential_keys_are_refused(workdir: Path, text: str, where: str) -> None:
    write(workdir, text.format(v=SECRET_VALUE))

    message = error_of(invoke("run", "in.csv", "--profile", "p"))

    assert message == (
        f"{CONFIG_FILE}: {where} looks like a credential, and a token never goes "
        "in the config file; put it in an environment variable and write "
        'token_env = "NAME", or in a file and write token_file = "PATH"'
    )
    assert SECRET_VALUE not in message


def test_token_from_profile_token_env(workdir: Path) -> None:
    write(workdir, NIGHTLY)

    out = shown(
        invoke("run", "in.csv", "--profile", "nightly", env={"ACME_TOKEN": "abc"})
    )

    assert out["token"] == "abc"


def test_token_from_profile_token_file_with_home(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(workdir))
    (workdir / "token.txt").write_text("from-file\n", encoding="utf-8")
    write(workdir, '[defaults]\ntoken_file = "~/token.txt"\n')

    profile = load_profile(None, None, cli.run.params)
    token = resolve_token(profile, {})

    assert profile is not None and profile.token_file == str(workdir / "token.txt")
    assert token == Secret("from-file")


def test_profile_token_source_replaces_the_defaults_one(workdir: Path) -> None:
    write(
        workdir,
        '[defaults]\ntoken_file = "t.txt"\n[profiles.p]\ntoken_env = "P_TOKEN"\n',
    )

    profile = load_profile(None, "p", cli.run.params)

    assert profile is not None
    assert (profile.token_env, profile.token_file) == ("P_TOKEN", None)
    assert resolve_token(profile, {"P_TOKEN": " xyz "}) == Secret("xyz")


def test_no_token_source_gives_none(workdir: Path) -> None:
    write(workdir, NIGHTLY)

    assert resolve_token(load_profile(None, "staging", cli.run.params), {}) is None
    assert resolve_token(None, {"BATCHRUN_TOKEN": "x"}) is None


def test_token_env_not_set(workdir: Path) -> None:
    write(workdir, NIGHTLY)
    profile = load_profile(None, "nightly", cli.run.params)

    with pytest.raises(UsageError) as caught:
        resolve_token(profile, {"ACME_TOKEN": "  "})

    assert str(caught.value) == (
        f"{CONFIG_FILE}: [profiles.nightly] token_env names ACME_TOKEN, which is "
        "not set or empty; export ACME_TOKEN or set BATCHRUN_TOKEN"
    )


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "token_file missing.txt: cannot read it (No such file or directory)"),
        ("\n", "token_file missing.txt is empty"),
    ],
)
def test_token_file_unusable(workdir: Path, content: str | None, expected: str) -> None:
    if content is not None:
        (workdir / "missing.txt").write_text(content, encoding="utf-8")
    profile = Profile(CONFIG_FILE, "p", {}, token_file="missing.txt")

    with pytest.raises(UsageError) as caught:
        resolve_token(profile, {})

    assert str(caught.value) == f"{CONFIG_FILE}: [defaults] {expected}"


def test_token_env_must_be_a_variable_name(workdir: Path) -> None:
    write(workdir, f'[profiles.p]\ntoken_env = "ey.{SECRET_VALUE}"\n')

    message = error_of(invoke("run", "in.csv", "--profile", "p"))

    assert message == (
        f"{CONFIG_FILE}: [profiles.p] token_env must be the name of an environment "
        "variable (letters, digits and _), not the token itself; for example "
        'token_env = "ACME_TOKEN"'
    )


def test_token_env_and_token_file_together(workdir: Path) -> None:
    write(workdir, '[profiles.p]\ntoken_env = "A"\ntoken_file = "b"\n')

    message = error_of(invoke("run", "in.csv", "--profile", "p"))

    assert message == (
        f"{CONFIG_FILE}: [profiles.p] sets token_env and token_file; keep one"
    )


# ------------------------------------------------------------------ errors


def test_config_file_not_found(workdir: Path) -> None:
    message = error_of(invoke("run", "in.csv", "--config", "nope.toml"))

    assert message == (
        "--config nope.toml: no such file; check the path, or leave --config out "
        f"to use ./{CONFIG_FILE}"
    )


def test_profile_without_any_file(workdir: Path) -> None:
    message = error_of(invoke("run", "in.csv", "--profile", "nightly"))

    assert message == (
        f"--profile nightly: there is no {CONFIG_FILE} in {os.getcwd()}; create "
        "one with a [profiles.nightly] table or pass --config PATH"
    )


def test_toml_syntax_error_gives_line_and_column(workdir: Path) -> None:
    write(workdir, '[profiles.p]\norg = "acme"\nflow = \n')

    message = error_of(invoke("run", "in.csv"))

    assert message == (
        f"{CONFIG_FILE}: line 3, column 8: not valid TOML: Invalid value"
    )


def test_file_not_utf8(workdir: Path) -> None:
    (workdir / CONFIG_FILE).write_bytes(b'[profiles.p]\norg = "\xff"\n')

    message = error_of(invoke("run", "in.csv"))

    assert message == f"{CONFIG_FILE}: not UTF-8 text; save it as UTF-8"


def test_unknown_profile_lists_the_profiles(workdir: Path) -> None:
    write(workdir, NIGHTLY)

    message = error_of(invoke("run", "in.csv", "--profile", "weekly"))

    assert message == (
        f"--profile weekly: {CONFIG_FILE} has no such profile; it has: nightly, staging"
    )


def test_unknown_profile_when_there_are_none(workdir: Path) -> None:
    write(workdir, '[defaults]\norg = "acme"\n')

    message = error_of(invoke("run", "in.csv", "--profile", "weekly"))

    assert message == (
        f"--profile weekly: {CONFIG_FILE} has no such profile; it has: none; add "
        "a [profiles.NAME] table"
    )


def test_unknown_key_lists_valid_keys(workdir: Path) -> None:
    write(workdir, '[profiles.p]\nbase_ulr = "https://gw.example.com"\n')
    message = error_of(invoke("run", "in.csv", "--profile", "p"))

    assert message.startswith(
        f"{CONFIG_FILE}: [profiles.p] has unknown key base_ulr (did you mean "
        "base_url?); valid keys: allow_insecure_http, base_url, burst, "
    )
    valid = message.split("valid keys: ")[1].split(", ")
    assert valid == sorted(set(valid))
    assert {"fmt", "constants", "config", "profile", "restart"}.isdisjoint(valid)
    assert {"format", "set", "token_env", "token_file", "include_input"} <= set(valid)


@pytest.mark.parametrize("key", ["restart", "retry-failed", "dry_run", "config"])
def test_one_off_actions_cannot_be_kept(workdir: Path, key: str) -> None:
    write(workdir, f"[profiles.p]\n{key} = true\n")

    message = error_of(invoke("run", "in.csv", "--profile", "p"))

    assert message.startswith(f"{CONFIG_FILE}: [profiles.p] has unknown key {key}")


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            'concurrency = "64"',
            "concurrency must be an integer, not a string; for example "
            "concurrency = 10",
        ),
        (
            "concurrency = true",
            "concurrency must be an integer, not true/false; for example "
            "concurrency = 10",
        ),
        (
            'timeout = "30s"',
            "timeout must be a number, not a string; for example timeout = 2.5",
        ),
        (
            "quiet = 1",
            "quiet must be true or false, not an integer; for example quiet = true",
        ),
        ("org = 7", 'org must be a string, not an integer; for example org = "..."'),
        (
            "columns = [1, 2]",
            "columns must be a list of names, not a list; for example "
            'columns = ["first_name", "phone"]',
        ),
        ('empty = "blank"', "empty must be one of text, null, omit, not 'blank'"),
        (
            "set = 3",
            'set must be a table like set = { name = "value" } or a list like '
            'set = ["name=value"], not an integer',
        ),
        (
            "set = { when = 2024-01-01 }",
            "set.when must be a string or a number, not a date or time",
        ),
        (
            'rename = ["first"]',
            'rename item 1 is not NAME=VALUE; for example rename = ["campaign=spring"]',
        ),
        ('token_file = ""', "token_file must not be empty"),
        ("token_env = 3", "token_env must be a string, not an integer"),
        (
            'base-url = "a"\nbase_url = "b"',
            "sets both base-url and base_url; keep one",
        ),
    ],
)
def test_wrong_value_types(workdir: Path, line: str, expected: str) -> None:
    write(workdir, f"[profiles.p]\n{line}\n")

    message = error_of(invoke("run", "in.csv", "--profile", "p"))

    assert message == f"{CONFIG_FILE}: [profiles.p] {expected}"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            'org = "acme"\n',
            "unknown top-level key org; the file holds a [defaults] table and "
            "[profiles.NAME] tables",
        ),
        ('defaults = "x"\n', "defaults must be a table; write [defaults]"),
        ("profiles = 1\n", "profiles must be tables; write [profiles.NAME]"),
        (
            '[profiles]\n"a b" = 1\n',
            'profiles."a b" must be a table; write [profiles."a b"]',
        ),
    ],
)
def test_file_shape_errors(workdir: Path, text: str, expected: str) -> None:
    write(workdir, text)

    message = error_of(invoke("run", "in.csv"))

    assert message == f"{CONFIG_FILE}: {expected}"


def test_errors_in_other_profiles_are_reported_too(workdir: Path) -> None:
    write(workdir, NIGHTLY + "[profiles.broken]\nconcurrency = 'x'\n")

    message = error_of(invoke("run", "in.csv", "--profile", "nightly"))

    assert message.startswith(f"{CONFIG_FILE}: [profiles.broken] concurrency")


def test_config_directory_cannot_be_read(workdir: Path) -> None:
    (workdir / "dir.toml").mkdir()

    message = error_of(invoke("run", "in.csv", "--config", "dir.toml"))

    assert message == "dir.toml: cannot read it (Is a directory)"


# ------------------------------------------------------------------ the function


def test_profile_default_map_uses_click_parameter_names(workdir: Path) -> None:
    write(
        workdir,
        """
        [profiles.p]
        format = "csv"
        set = { a = "1" }
        max-attempts = 2
        include_input = true
        token_file = "t.txt"
        """,
    )

    default_map = profile_default_map(None, "p", cli.run.params)

    assert default_map == {
        "fmt": "csv",
        "constants": ("a=1",),
        "max_attempts": 2,
        "include_input": True,
    }


def test_profile_default_map_without_file_is_empty(workdir: Path) -> None:
    assert profile_default_map(None, None, cli.run.params) == {}


def test_current_profile_outside_a_command_is_none() -> None:
    assert current_profile() is None


def test_unknown_key_raises_usage_error_from_the_function(workdir: Path) -> None:
    write(workdir, "[profiles.p]\nshow = 3\n")

    with pytest.raises(UsageError) as caught:
        profile_default_map(None, "p", cli.run.params)

    assert caught.value.exit_code == EXIT_USAGE
    assert "has unknown key show" in str(caught.value)
