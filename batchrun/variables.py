"""Turning a row's values into the variable map sent as the request body."""

from __future__ import annotations

import json
from typing import Any

from .config import Mapping

# The column a failed-rows file adds; it is never sent.
ERROR_COLUMN = "batchrun_error"


class RowProblem(Exception):
    """This row cannot be sent; the message says why (recorded as invalid)."""


class VariableMapper:
    """Applies a :class:`Mapping` to rows and serializes the request body."""

    def __init__(self, mapping: Mapping, columns: list[str] | None = None) -> None:
        self.mapping = mapping
        self._rename = dict(mapping.rename)
        self._constants = dict(mapping.constants)
        self._keep = set(mapping.columns) if mapping.columns is not None else None
        if columns is not None:
            self.check_columns(columns)

    def check_columns(self, columns: list[str]) -> None:
        """Raise RowProblem if the mapping does not fit the header.

        A named column must exist; two columns (or a column and a --set
        constant or the --row-id-var) must not end up as one variable; a
        --require'd variable must be one the rows can carry.
        """
        named = set(self._keep or ()) | set(self._rename)
        missing = [name for name in named if name not in columns]
        if missing:
            raise RowProblem(
                f"column(s) {', '.join(sorted(missing))} not in the header; "
                f"the header has: {', '.join(columns)}"
            )
        sources: dict[str, str] = {}
        for column in columns:
            if column == ERROR_COLUMN:
                continue
            if self._keep is not None and column not in self._keep:
                continue
            variable = self._rename.get(column, column)
            if variable in sources:
                renames = [
                    f"--rename {name}={self._rename[name]}"
                    for name in (sources[variable], column)
                    if name in self._rename
                ]
                raise RowProblem(
                    f"columns {sources[variable]!r} and {column!r} would both be "
                    f"sent as {variable!r} ({', '.join(renames) or 'same name'}); "
                    "change --rename or --columns"
                )
            sources[variable] = column
        extra = list(self._constants)
        if self.mapping.row_id_var:
            extra.append(self.mapping.row_id_var)
        for variable in extra:
            if variable in sources:
                raise RowProblem(
                    f"{variable!r} would be sent both from column "
                    f"{sources[variable]!r} and by --set or --row-id-var; rename "
                    "one of them"
                )
        carried = set(sources) | set(extra)
        unknown = [name for name in self.mapping.require if name not in carried]
        if unknown:
            raise RowProblem(
                f"--require {', '.join(unknown)}: no such variable; the rows "
                f"carry: {', '.join(sorted(carried))}"
            )

    def variables(self, values: dict[str, Any], row_id: str) -> dict[str, Any]:
        """Return the variable map for one row's values."""
        mapping = self.mapping
        if ERROR_COLUMN in values:  # a row fed back from a failed-rows file
            values = {k: v for k, v in values.items() if k != ERROR_COLUMN}
            if not values:
                raise RowProblem(
                    f"only a {ERROR_COLUMN} value: the row's data was lost; "
                    "restore it from the original input"
                )
        if mapping.is_identity:
            return values
        result: dict[str, Any] = {}
        for name, value in values.items():
            if self._keep is not None and name not in self._keep:
                continue
            if value == "" and mapping.empty != "text":
                if mapping.empty == "omit":
                    continue
                value = None
            result[self._rename.get(name, name)] = value
        result.update(self._constants)
        if mapping.row_id_var:
            result[mapping.row_id_var] = row_id
        self._check_required(result)
        return result

    def _check_required(self, variables: dict[str, Any]) -> None:
        missing = [
            name for name in self.mapping.require if variables.get(name) in (None, "")
        ]
        if missing:
            raise RowProblem(f"missing required variable(s): {', '.join(missing)}")


def encode_body(variables: dict[str, Any]) -> bytes:
    """Serialize variables as strict JSON (never NaN or Infinity)."""
    try:
        text = json.dumps(variables, ensure_ascii=False, allow_nan=False)
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise RowProblem(
            "a value holds a lone UTF-16 surrogate (such as \\ud800), which "
            "is not text; fix the value"
        ) from None
    except (TypeError, ValueError) as exc:
        raise RowProblem(f"values cannot be sent as JSON: {exc}") from exc
