"""Text a user sends that the database cannot keep, and text that cannot be shown as it is.

PostgreSQL's text and jsonb refuse the NUL character, and a lone surrogate (which JSON's
"\\ud800" escape can produce) has no UTF-8 form at all: neither may reach a write, and a message
that quotes one must escape it before it is rendered.
"""

from __future__ import annotations

from typing import Any

import orjson

NUL = "contains the NUL character (\\u0000), which cannot be stored"
SURROGATE = "contains an invalid Unicode character (a lone surrogate)"
BIG_INTEGER = "contains a whole number beyond 64 bits, which cannot be stored (write it as text)"
TOO_DEEP = "is nested too deep to store (more than 250 levels)"


def unstorable(text: str) -> str | None:
    """Why this text cannot be stored, or None when it can."""
    if "\x00" in text:
        return NUL
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return SURROGATE
    return None


def unstorable_json(value: Any) -> str | None:
    """Why this JSON value (any string in it, keys too) cannot be stored, or None."""
    try:
        encoded = orjson.dumps(value)
    except orjson.JSONEncodeError as exc:
        reason = str(exc)
        if "Integer" in reason:
            return BIG_INTEGER
        return TOO_DEEP if "Recursion" in reason else SURROGATE
    return NUL if b"\\u0000" in encoded else None


def printable(text: str) -> str:
    """The text with lone surrogates written as \\udxxx escapes, so that it can be rendered."""
    if text.isascii():
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8")
