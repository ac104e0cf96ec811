"""What an agent id may look like, checked before any I/O.

Convex document ids are lowercase base-32 strings of about 32 characters; the local
backend's ids are digits followed by the table name. Anything else (path separators,
colons that would forge cache keys, whitespace, absurd lengths) is rejected.
"""

from __future__ import annotations

import re

from services.errors import InvalidAgentIdError

AGENT_ID_PATTERN = re.compile(r"[0-9a-z]{10,64}")


def validate_agent_id(agent_id: object) -> str:
    """Return ``agent_id`` if it is well formed, else raise :class:`InvalidAgentIdError`."""
    if not isinstance(agent_id, str):
        raise InvalidAgentIdError(repr(agent_id), f"agent id must be a string, got {type(agent_id).__name__}")
    if AGENT_ID_PATTERN.fullmatch(agent_id) is None:
        shown = agent_id if len(agent_id) <= 80 else agent_id[:80] + "..."
        raise InvalidAgentIdError(shown, "agent id must be 10-64 characters of [0-9a-z]")
    return agent_id
