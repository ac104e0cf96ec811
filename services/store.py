"""The interface every source of truth implements: Convex, or the embedded file."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from services.models import AgentRecord


@dataclass(frozen=True, slots=True)
class AgentVersion:
    """One row of the change feed."""

    agent_id: str
    updated_at: float
    deleted: bool = False


class AgentStore(Protocol):
    """Reads and the legacy write-back. Implementations raise only ``StoreError``."""

    async def get_agent(self, agent_id: str) -> AgentRecord | None:
        """The validated agent, or ``None`` if the store has no such agent."""
        ...

    async def changed_since(self, since_ms: float, limit: int) -> list[AgentVersion]:
        """Agents with ``updatedAt >= since_ms``, ascending, at most ``limit``."""
        ...

    async def save_prompt(
        self, agent_id: str, full_prompt: str, built_from_updated_at: float, template_version: int
    ) -> bool:
        """Store a prompt built for a legacy agent unless a newer edit won; True if written."""
        ...

    async def aclose(self) -> None: ...


# How far back the refresher re-reads the change feed; mirrors
# CHANGED_SINCE_OVERLAP_MS in convex/convex/agents.ts (see the reasoning there).
CHANGED_SINCE_OVERLAP_MS = 10_000.0
