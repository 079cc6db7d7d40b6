"""Turning a row's values into the variable map sent as the request body."""

from __future__ import annotations

import json
from typing import Any

from .config import Mapping


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
        """Raise RowProblem if a named column is not in the header."""
        named = set(self._keep or ()) | set(self._rename)
        missing = [name for name in named if name not in columns]
        if missing:
            raise RowProblem(
                f"column(s) {', '.join(sorted(missing))} not in the header; "
                f"the header has: {', '.join(columns)}"
            )

    def variables(self, values: dict[str, Any], row_id: str) -> dict[str, Any]:
        """Return the variable map for one row's values."""
        mapping = self.mapping
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
    except (TypeError, ValueError) as exc:
        raise RowProblem(f"values cannot be sent as JSON: {exc}") from exc
    return text.encode("utf-8")
