"""Making text from outside safe to show: short, printable, no credentials.

Service error bodies and values read back from outputs pass through here
before they reach a record, a message or a report.
"""

from __future__ import annotations

import re

from .config import Secret

ERROR_LIMIT = 200
# Shorter tokens are not searched for in text: it would mangle every message.
MIN_REDACTED = 6

_BEARER = re.compile(r"(?i)\b(bearer\s+)[^\s\"',;]+")
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f]+")


def clean_message(
    text: str, token: Secret | None = None, limit: int = ERROR_LIMIT
) -> str:
    """One printable line of at most ``limit`` characters, credentials redacted."""
    if token is not None and len(token.reveal()) >= MIN_REDACTED:
        text = text.replace(token.reveal(), "[redacted]")
    text = _BEARER.sub(r"\1[redacted]", text)
    text = _UNPRINTABLE.sub(" ", text)
    if not text.isprintable():  # format characters: bidi overrides, zero widths
        text = "".join(c if c.isprintable() else " " for c in text)
    text = " ".join(text.split())
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return text
