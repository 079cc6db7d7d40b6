"""Variable mapping: columns, renames, constants, empty values, required names."""

from __future__ import annotations

import json
from typing import Any

import pytest

from batchrun.config import Mapping
from batchrun.variables import RowProblem, VariableMapper, encode_body

ROW = {"first": "Ada", "phone": "+15550100", "plan": "", "age": 36}


def mapped(mapping: Mapping, values: dict[str, Any] | None = None) -> dict[str, Any]:
    return VariableMapper(mapping).variables(dict(values or ROW), "run-7")


def test_identity_mapping_returns_the_values_unchanged() -> None:
    values = {"a": "", "b": None, "c": [1, {"d": 2.5}], "e": "x"}

    result = VariableMapper(Mapping()).variables(values, "run-1")

    assert result is values
    assert result == {"a": "", "b": None, "c": [1, {"d": 2.5}], "e": "x"}


def test_columns_keep_only_the_named_columns_in_row_order() -> None:
    result = mapped(Mapping(columns=("phone", "first")))

    assert result == {"first": "Ada", "phone": "+15550100"}
    assert list(result) == ["first", "phone"]


def test_rename_changes_names_and_keeps_values() -> None:
    result = mapped(Mapping(rename=(("first", "first_name"), ("age", "years"))))

    assert result == {
        "first_name": "Ada",
        "phone": "+15550100",
        "plan": "",
        "years": 36,
    }


def test_constants_are_added_and_override_a_column_of_the_same_name() -> None:
    result = mapped(Mapping(constants=(("campaign", "spring"), ("plan", "gold"))))

    assert result == {
        "first": "Ada",
        "phone": "+15550100",
        "plan": "gold",
        "age": 36,
        "campaign": "spring",
    }


def test_row_id_var_carries_the_row_id() -> None:
    result = mapped(Mapping(columns=("first",), row_id_var="batch_row"))

    assert result == {"first": "Ada", "batch_row": "run-7"}


@pytest.mark.parametrize(
    ("empty", "expected"),
    [
        ("text", {"a": "", "b": None, "c": 0, "d": "x", "e": " "}),
        ("null", {"a": None, "b": None, "c": 0, "d": "x", "e": " "}),
        ("omit", {"b": None, "c": 0, "d": "x", "e": " "}),
    ],
)
def test_empty_policy_applies_only_to_empty_text(
    empty: str, expected: dict[str, Any]
) -> None:
    values = {"a": "", "b": None, "c": 0, "d": "x", "e": " "}

    result = mapped(Mapping(empty=empty, columns=tuple(values)), values)

    assert result == expected


def test_require_passes_when_values_are_present() -> None:
    result = mapped(Mapping(require=("first", "age")))

    assert result["first"] == "Ada"


@pytest.mark.parametrize(
    ("values", "missing"),
    [
        ({"first": "Ada"}, "phone, plan"),
        ({"first": "Ada", "phone": "", "plan": None}, "phone, plan"),
        ({"first": "", "phone": "1", "plan": "x"}, "first"),
    ],
)
def test_require_names_every_missing_variable(
    values: dict[str, Any], missing: str
) -> None:
    mapper = VariableMapper(Mapping(require=("first", "phone", "plan")))

    with pytest.raises(RowProblem) as caught:
        mapper.variables(values, "run-1")

    assert str(caught.value) == f"missing required variable(s): {missing}"


def test_require_checks_the_names_after_rename_and_omit() -> None:
    mapping = Mapping(rename=(("plan", "tier"),), empty="omit", require=("tier",))

    with pytest.raises(RowProblem, match=r"^missing required variable\(s\): tier$"):
        mapped(mapping)


def test_require_is_met_by_a_constant() -> None:
    result = mapped(Mapping(constants=(("plan", "gold"),), require=("plan",)))

    assert result["plan"] == "gold"


def test_check_columns_names_columns_missing_from_the_header() -> None:
    mapping = Mapping(columns=("first", "zip"), rename=(("city", "town"),))

    with pytest.raises(RowProblem) as caught:
        VariableMapper(mapping, columns=["first", "phone"])

    assert str(caught.value) == (
        "column(s) city, zip not in the header; the header has: first, phone"
    )


def test_check_columns_accepts_a_header_with_every_named_column() -> None:
    mapping = Mapping(columns=("first",), rename=(("phone", "tel"),))

    mapper = VariableMapper(mapping, columns=["first", "phone", "plan"])

    assert mapper.variables({"first": "A", "phone": "1", "plan": "x"}, "r") == {
        "first": "A"
    }


# ------------------------------------------------------------- encode_body


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_encode_body_rejects_nan_and_infinity(bad: float) -> None:
    with pytest.raises(RowProblem) as caught:
        encode_body({"x": [1, {"y": bad}]})

    assert str(caught.value) == (
        "values cannot be sent as JSON: "
        "Out of range float values are not JSON compliant"
    )


def test_encode_body_rejects_values_json_cannot_hold() -> None:
    with pytest.raises(RowProblem) as caught:
        encode_body({"x": b"raw"})

    assert str(caught.value) == (
        "values cannot be sent as JSON: Object of type bytes is not JSON serializable"
    )


def test_encode_body_keeps_non_ascii_as_utf8() -> None:
    body = encode_body({"name": "Zoë 北京 🚀", "ü": "x"})

    assert body == '{"name": "Zoë 北京 🚀", "ü": "x"}'.encode()
    assert b"\\u" not in body


def test_encode_body_keeps_big_integers_exact() -> None:
    big = 123456789012345678901234567890
    negative = -(2**64) - 1

    body = encode_body({"big": big, "neg": negative, "f": 0.1})

    assert json.loads(body) == {"big": big, "neg": negative, "f": 0.1}
    assert b"123456789012345678901234567890" in body


def test_encode_body_of_nothing_is_an_empty_object() -> None:
    assert encode_body({}) == b"{}"
