"""What the stand-in "model" says: a fixed, checkable function of the conversation.

A reply quotes the last user message, so a test can tell which utterance (or typed text) it
answers: ``You said: <transcript>.`` With no user message yet (a greeting asked for with
instructions only) it says :data:`GREETING_REPLY`.
"""

from __future__ import annotations

import re

GREETING_REPLY = "Hello, this is the stand-in. How can I help you?"
_TOKEN = re.compile(r"\S+\s*")


def reply_to(last_user_text: str | None) -> str:
    if not last_user_text or not last_user_text.strip():
        return GREETING_REPLY
    return f"You said: {last_user_text.strip()}."


def reply_tokens(text: str, limit: int | None) -> tuple[list[str], bool]:
    """The reply cut into streamed tokens (a word and its trailing space each); ``True``
    when ``limit`` (``max_tokens``) cut it short."""
    parts = _TOKEN.findall(text)
    if limit is not None and len(parts) > limit:
        return parts[:limit], True
    return parts, False
