"""Which agent a job is for: from dispatch metadata if it says, else from the room name.

Convention (the default ``ROOM_NAME_PATTERN``): ``agent-<agentId>`` optionally followed
by ``--<anything>`` to keep rooms unique per call, e.g. ``agent-j57a...x9--call-8812``.
Dispatch metadata, when it is a JSON object with ``agentId``, wins over the room name,
and its ``updatedAt`` becomes the service's freshness hint.

Both come from whoever creates rooms or dispatches: metadata over
``MAX_METADATA_BYTES`` or nested too deep is refused before (or while) parsing, and
every value echoed in an error is clipped, so no input makes an unbounded log line.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Literal

from services.agent_ids import validate_agent_id
from services.errors import InvalidAgentIdError
from services.hints import InvalidHintError, clip, parse_version_hint

DEFAULT_ROOM_NAME_PATTERN = r"agent-(?P<agent_id>[0-9a-z]{10,64})(?:--[A-Za-z0-9_.-]{1,64})?"
# Ours is {"agentId": ..., "updatedAt": ...}: well under this. Bigger is refused unparsed.
MAX_METADATA_BYTES = 4096


class JobTargetError(ValueError):
    """Neither the dispatch metadata nor the room name names a valid agent."""


@dataclass(frozen=True, slots=True)
class JobTarget:
    agent_id: str
    updated_at: float | None
    source: Literal["metadata", "room"]


def room_name_for(agent_id: str, suffix: str | None = None) -> str:
    """The room name the default convention expects for ``agent_id``."""
    return f"agent-{agent_id}" + (f"--{suffix}" if suffix else "")


def _from_metadata(metadata: str) -> JobTarget | None:
    if not metadata.strip():
        return None
    if len(metadata) > MAX_METADATA_BYTES or len(metadata.encode("utf-8", "replace")) > MAX_METADATA_BYTES:
        raise JobTargetError(f"dispatch metadata is larger than {MAX_METADATA_BYTES} bytes")
    try:
        data = json.loads(metadata)
    except RecursionError:
        raise JobTargetError("dispatch metadata is nested too deeply") from None
    except ValueError:
        return None  # metadata that is not JSON belongs to someone else
    if not isinstance(data, dict) or "agentId" not in data:
        return None
    try:
        agent_id = validate_agent_id(data["agentId"])
    except InvalidAgentIdError as exc:
        raise JobTargetError(f"dispatch metadata: {clip(str(exc), 160)}") from None
    try:
        hint = parse_version_hint(data.get("updatedAt"))
    except InvalidHintError as exc:
        raise JobTargetError(f"dispatch metadata: {exc}") from None
    return JobTarget(agent_id, hint, "metadata")


def resolve_target(room_name: str, metadata: str, pattern: str | None = None) -> JobTarget:
    """The agent for a job, or :class:`JobTargetError` saying why there is none."""
    from_metadata = _from_metadata(metadata)
    if from_metadata is not None:
        return from_metadata
    match = re.fullmatch(pattern or DEFAULT_ROOM_NAME_PATTERN, room_name)
    if match is None or not match.group("agent_id"):
        expected = clip(pattern or DEFAULT_ROOM_NAME_PATTERN, 120)
        raise JobTargetError(f"room '{clip(room_name)}' does not name an agent (expected {expected})")
    try:
        return JobTarget(validate_agent_id(match.group("agent_id")), None, "room")
    except InvalidAgentIdError as exc:
        raise JobTargetError(f"room '{clip(room_name)}': {clip(str(exc), 160)}") from None
