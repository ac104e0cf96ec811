"""One entry type and one codec for what a tier holds of an agent version.

Every tier (RAM, the host tier, Redis) holds the same thing for ``agentId:updatedAt``:
the built prompt, the agent's config, and when it was loaded. Its JSON,
``{prompt, agent, loadedAt}``, is one format: the host tier's ``p:`` values and Redis's
``:p:`` values are byte for byte what :func:`encode_entry` writes (hosts of an older
version read and write them too). A version's greeting audio has its own slot and
codec beside it (``services/tiers/greeting.py``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from services.records import AgentConfig


@dataclass(frozen=True, slots=True)
class TierEntry:
    prompt: str = field(repr=False)
    agent: AgentConfig
    loaded_at: float
    """When the store (or a shared tier) vouched for it, on the clock of the process that loaded it."""
    confirmed_at: float | None = None
    """The host tier only: when its owner last vouched that this version was current."""

    @property
    def vouched_at(self) -> float:
        """The later of loading and confirmation: where the freshness rule measures age from."""
        return self.loaded_at if self.confirmed_at is None else max(self.loaded_at, self.confirmed_at)


def encode_entry(agent: AgentConfig, prompt: str, loaded_at: float) -> bytes:
    return json.dumps({"prompt": prompt, "agent": agent.to_json(), "loadedAt": loaded_at}).encode()


def decode_entry(data: dict[str, Any]) -> TierEntry:
    """A parsed entry; ``ValueError``, ``KeyError`` or ``TypeError`` if it is not one."""
    prompt = data["prompt"]
    loaded_at = float(data["loadedAt"])
    if not isinstance(prompt, str) or not math.isfinite(loaded_at):
        raise ValueError("not a tier entry")
    return TierEntry(prompt, AgentConfig.from_json(data["agent"]), loaded_at)


def parse_entry(raw: bytes | str) -> TierEntry:
    """:func:`decode_entry` of raw JSON."""
    data = json.loads(raw)
    if not isinstance(data, dict):
        raise ValueError("not a tier entry")
    return decode_entry(data)
