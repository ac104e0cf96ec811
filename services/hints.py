"""Untrusted values from a dispatch: the one parser of the ``updatedAt`` version hint, and
the one way to echo a value into a log line or an error message without letting its
size through.

A hint comes from whoever dispatched the job, through JSON: it may be a 400-digit
integer, ``1e400``, a string, a boolean. Only a non-negative number of milliseconds no
larger than 2**53 (exact as a float, which every real stamp is) is a hint.
"""

from __future__ import annotations

import math

MAX_HINT_MS = float(2**53)
ECHO_LIMIT = 80


class InvalidHintError(ValueError):
    """The value cannot be a version stamp; the message says why (and is bounded)."""


def parse_version_hint(value: object) -> float | None:
    """``None`` for no hint, the stamp as a float, or :class:`InvalidHintError`."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidHintError(f"updatedAt must be a number of milliseconds, got {type(value).__name__}")
    if isinstance(value, int):
        # float() of a huge int raises OverflowError; compare as ints first.
        if not 0 <= value <= MAX_HINT_MS:
            raise InvalidHintError("updatedAt is out of range")
        return float(value)
    if not math.isfinite(value) or not 0 <= value <= MAX_HINT_MS:
        raise InvalidHintError("updatedAt is out of range")
    return float(value)


def clip(value: object, limit: int = ECHO_LIMIT) -> str:
    """``value`` as printable text of at most ``limit`` characters (plus a marker), for
    echoing: control and non-ASCII characters are escaped *before* the cut, so an escape
    can never stretch a clipped value past its bound."""
    text = value if isinstance(value, str) else repr(value) if not isinstance(value, (bytes, bytearray)) else "<bytes>"
    head = text[: limit + 1].encode("unicode_escape").decode("ascii")
    if len(text) <= limit and len(head) <= limit:
        return head
    return f"{head[:limit]}...(+{max(len(text) - limit, 1)} chars)"
