"""Run configuration: rates, identifiers, the base URL, secrets and validation."""

from __future__ import annotations

from typing import Any

import pytest

from batchrun.config import (
    DEFAULT_BURST,
    DEFAULT_CONCURRENCY,
    Mapping,
    Rate,
    RunConfig,
    Secret,
    Target,
    check_base_url,
    check_path_segment,
    parse_rate,
)
from batchrun.errors import EXIT_USAGE, UsageError

TOKEN = "tok-5ecret-value"


def make_config(**changes: Any) -> RunConfig:
    options: dict[str, Any] = {
        "input": "in.csv",
        "output": "out.csv",
        "target": Target("https://gw.example.com", "org", "flow"),
        "token": Secret(TOKEN),
    }
    options.update(changes)
    return RunConfig(**options)


# ------------------------------------------------------------------ rates


@pytest.mark.parametrize(
    ("text", "count", "period"),
    [
        ("20/s", 20, 1.0),
        ("1/s", 1, 1.0),
        ("600/min", 600, 60.0),
        ("5/m", 5, 60.0),
        ("7/sec", 7, 1.0),
        ("7/second", 7, 1.0),
        ("3/minute", 3, 60.0),
        (" 20 / S ", 20, 1.0),
        ("20/MIN", 20, 60.0),
        ("100000/s", 100000, 1.0),
    ],
)
def test_parse_rate_accepts_per_second_and_per_minute(
    text: str, count: int, period: float
) -> None:
    rate = parse_rate(text)

    assert rate == Rate(count, period)


@pytest.mark.parametrize(
    "text",
    ["", "20", "0/s", "00/min", "-1/s", "1.5/s", "20/h", "20/seconds", "s/20", "/s"],
)
def test_parse_rate_rejects_other_text_naming_the_option(text: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_rate(text)

    assert str(caught.value) == (
        f"--rate {text!r} is not a rate; write requests per second or minute, "
        "for example --rate 20/s or --rate 600/min"
    )
    assert caught.value.exit_code == EXIT_USAGE


def test_rate_per_second_and_text() -> None:
    assert Rate(600, 60.0).per_second == 10.0
    assert str(Rate(600, 60.0)) == "600/min"
    assert str(Rate(20, 1.0)) == "20/s"


# ------------------------------------------------------------ path segments


@pytest.mark.parametrize("value", ["demo-org", "a%b", "ü", "x?y#z", "a.b", "ORG_1"])
def test_check_path_segment_returns_a_good_identifier_unchanged(value: str) -> None:
    assert check_path_segment("--org", value) == value


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("", "is empty"),
        ("   ", "is empty"),
        (" org", "contains whitespace"),
        ("org ", "contains whitespace"),
        ("my org", "contains whitespace"),
        ("a\tb", "contains whitespace"),
        ("a\nb", "contains whitespace"),
        ("a/b", "contains a slash"),
        ("/", "contains a slash"),
        ("a\\b", "contains a slash"),
        ("..", "contains '..'"),
        (".", "contains '..'"),
        ("a..b", "contains '..'"),
        ("a\x00b", "contains a control character"),
        ("a\x1bb", "contains a control character"),
        ("a\x7fb", "contains a control character"),
    ],
)
def test_check_path_segment_rejects_unsafe_identifiers(
    value: str, problem: str
) -> None:
    with pytest.raises(UsageError) as caught:
        check_path_segment("--flow", value)

    assert str(caught.value) == (
        f"--flow {value!r} {problem}; give the identifier exactly as the "
        "platform shows it"
    )


# ------------------------------------------------------------------ target


@pytest.mark.parametrize(
    ("org", "flow", "path"),
    [
        ("demo", "welcome", "/orgs/demo/flows/welcome/execute"),
        ("a%b", "f", "/orgs/a%25b/flows/f/execute"),
        ("ü", "f", "/orgs/%C3%BC/flows/f/execute"),
        ("o", "x?y#z", "/orgs/o/flows/x%3Fy%23z/execute"),
        ("a/b", "f g", "/orgs/a%2Fb/flows/f%20g/execute"),
    ],
)
def test_target_url_escapes_org_and_flow_as_path_segments(
    org: str, flow: str, path: str
) -> None:
    target = Target("https://gw.example.com/prefix", org, flow)

    assert target.url == "https://gw.example.com/prefix/cgw/process/v1" + path


# ---------------------------------------------------------------- base URL


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("https://gw.example.com", "https://gw.example.com"),
        ("https://gw.example.com/", "https://gw.example.com"),
        ("https://gw.example.com/api/", "https://gw.example.com/api"),
        ("https://gw.example.com:8443//", "https://gw.example.com:8443"),
        ("  https://gw.example.com/  ", "https://gw.example.com"),
        ("http://127.0.0.1:8080/", "http://127.0.0.1:8080"),
        ("http://localhost:8080", "http://localhost:8080"),
        ("http://LOCALHOST", "http://LOCALHOST"),
        ("http://[::1]:9000/", "http://[::1]:9000"),
    ],
)
def test_check_base_url_accepts_https_and_loopback_http(
    value: str, expected: str
) -> None:
    assert check_base_url(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "http://gw.example.com",
        "http://10.0.0.5:8080",
        "http://localhost.example.com",
        "http://127.0.0.1.example.com",
    ],
)
def test_check_base_url_refuses_plain_http_to_other_hosts(value: str) -> None:
    with pytest.raises(UsageError) as caught:
        check_base_url(value)

    assert str(caught.value) == (
        f"--base-url {value!r} uses plain http to a host other than loopback, "
        "which would expose the token; use https, or pass --allow-insecure-http"
    )


def test_check_base_url_allows_plain_http_when_asked() -> None:
    url = check_base_url("http://gw.example.com/", allow_insecure_http=True)

    assert url == "http://gw.example.com"


@pytest.mark.parametrize(
    "value", ["gw.example.com", "ftp://gw.example.com", "https://", "https:///x", ""]
)
def test_check_base_url_rejects_what_is_not_an_http_url(value: str) -> None:
    with pytest.raises(UsageError) as caught:
        check_base_url(value)

    assert str(caught.value) == (
        f"--base-url {value!r} is not an http(s) URL; give the gateway address, "
        "for example --base-url https://gateway.example.com"
    )


@pytest.mark.parametrize(
    "value", ["https://gw.example.com/?debug=1", "https://gw.example.com/#top"]
)
def test_check_base_url_rejects_query_and_fragment(value: str) -> None:
    with pytest.raises(UsageError, match="has a query or fragment"):
        check_base_url(value)


@pytest.mark.parametrize(
    "value",
    ["https://user:pw-secret@gw.example.com", "https://user@gw.example.com"],
)
def test_check_base_url_rejects_credentials_without_echoing_them(
    value: str,
) -> None:
    with pytest.raises(UsageError) as caught:
        check_base_url(value)

    assert str(caught.value) == (
        "--base-url must not carry credentials; put the token in BATCHRUN_TOKEN "
        "or --token-file"
    )


def test_check_base_url_never_echoes_credentials_with_a_query() -> None:
    with pytest.raises(UsageError) as caught:
        check_base_url("https://user:pw-secret@gw.example.com/?a=1")

    assert "pw-secret" not in str(caught.value)


@pytest.mark.parametrize(
    "value", ["https://gw.example.com?", "https://gw.example.com#"]
)
def test_check_base_url_empty_query_or_fragment_never_reaches_the_url(
    value: str,
) -> None:
    try:
        url = check_base_url(value)
    except UsageError:
        return

    assert "?" not in url and "#" not in url


# ------------------------------------------------------------------ secret


def test_secret_masks_itself_in_repr_str_and_format() -> None:
    secret = Secret(TOKEN)

    shown = [repr(secret), str(secret), f"{secret}", format(secret), f"{secret!r}"]

    assert all(TOKEN not in text for text in shown)
    assert repr(secret) == "Secret('********')"
    assert secret.reveal() == TOKEN


def test_secret_compares_and_hashes_by_value() -> None:
    assert Secret("a") == Secret("a")
    assert Secret("a") != Secret("b")
    assert Secret("a") != "a"
    assert len({Secret("a"), Secret("a")}) == 1


def test_run_config_repr_masks_the_token() -> None:
    config = make_config()

    assert TOKEN not in repr(config)
    assert "Secret('********')" in repr(config)


# --------------------------------------------------------------- run config


def test_run_config_defaults() -> None:
    config = make_config()

    assert config.concurrency == DEFAULT_CONCURRENCY
    assert config.burst == DEFAULT_BURST
    assert config.rate is None
    assert config.mapping.is_identity


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"concurrency": 0}, "--concurrency must be at least 1, got 0"),
        ({"burst": 0}, "--burst must be at least 1, got 0"),
        ({"max_attempts": -1}, "--max-attempts must be at least 1, got -1"),
        (
            {"max_consecutive_failures": 0},
            "--max-consecutive-failures must be at least 1, got 0",
        ),
        (
            {"connect_timeout": 0.0},
            "--connect-timeout must be a positive number of seconds",
        ),
        ({"read_timeout": -1.0}, "--timeout must be a positive number of seconds"),
        (
            {"read_timeout": float("nan")},
            "--timeout must be a positive number of seconds",
        ),
        ({"mapping": Mapping(empty="none")}, "--empty must be one of text, null, omit"),
        ({"in_doubt": "ask"}, "--in-doubt must be one of resend, skip"),
        (
            {"restart": True, "retry_failed": True},
            "--restart and --retry-failed cannot be used together",
        ),
    ],
)
def test_run_config_rejects_bad_values_naming_the_option(
    changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(UsageError) as caught:
        make_config(**changes)

    assert str(caught.value) == message


def test_run_config_is_frozen() -> None:
    config = make_config()

    with pytest.raises(AttributeError):
        config.concurrency = 3  # type: ignore[misc]


# ----------------------------------------------------------------- mapping


def test_mapping_identity_and_describe() -> None:
    assert Mapping().is_identity
    for changed in (
        Mapping(columns=("a",)),
        Mapping(rename=(("a", "b"),)),
        Mapping(constants=(("k", "v"),)),
        Mapping(require=("a",)),
        Mapping(empty="null"),
        Mapping(row_id_var="rid"),
    ):
        assert not changed.is_identity

    described = Mapping(columns=("a",), rename=(("a", "b"),)).describe()

    assert described == {
        "columns": ["a"],
        "rename": [["a", "b"]],
        "constants": [],
        "require": [],
        "empty": "text",
        "row_id_var": None,
    }
