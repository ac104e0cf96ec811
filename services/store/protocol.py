"""The interface every source of truth implements: Convex, or the embedded file."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import structlog

from services import metrics
from services.agent_ids import AGENT_ID_PATTERN
from services.errors import StoreResponseError
from services.records import AgentRecord

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class AgentVersion:
    """One row of the change feed. ``deleted``: the agent was removed at ``updated_at``
    (a tombstone); every tier must drop it."""

    agent_id: str
    updated_at: float
    deleted: bool = False


class AgentStore(Protocol):
    """Reads and the legacy write-back. Implementations raise only ``StoreError``."""

    async def get_agent(self, agent_id: str) -> AgentRecord | None:
        """The validated agent, or ``None`` if the store has no such agent."""
        ...

    async def changed_since(self, since_ms: float, limit: int) -> list[AgentVersion]:
        """Agents (and tombstones of deleted ones) with ``updatedAt >= since_ms``, ascending,
        at most ``limit``. A malformed row is skipped and counted, never fatal to the rest."""
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


class FeedPage(list[AgentVersion]):
    """The valid rows of one ``changed_since`` answer; ``answered`` also counts the malformed
    rows skipped, so a caller can tell a full page (more to read) from the end of the feed."""

    def __init__(self, rows: list[AgentVersion], answered: int) -> None:
        super().__init__(rows)
        self.answered = answered


def rows_answered(page: list[AgentVersion]) -> int:
    """How many rows the store answered for ``page``, valid or not."""
    return page.answered if isinstance(page, FeedPage) else len(page)


def parse_feed_rows(rows: object, source: str) -> FeedPage:
    """Validate change-feed rows ``{_id, updatedAt, deleted?}``: the good ones, and how many
    were skipped as malformed (one bad row must not cost the whole poll)."""
    if not isinstance(rows, list):
        raise StoreResponseError(f"{source}: expected a list")
    versions: list[AgentVersion] = []
    skipped = 0
    for row in rows:
        agent_id = row.get("_id") if isinstance(row, dict) else None
        updated_at = row.get("updatedAt") if isinstance(row, dict) else None
        deleted = row.get("deleted", False) if isinstance(row, dict) else False
        if (
            not isinstance(agent_id, str)
            or AGENT_ID_PATTERN.fullmatch(agent_id) is None
            or not isinstance(updated_at, (int, float))
            or isinstance(updated_at, bool)
            or not math.isfinite(updated_at)
            or not isinstance(deleted, bool)
        ):
            skipped += 1
            continue
        versions.append(AgentVersion(agent_id, float(updated_at), deleted))
    if skipped:
        metrics.FEED_ROWS_SKIPPED.inc(skipped)
        log.warning("change_feed_rows_skipped", source=source, skipped=skipped, kept=len(versions))
    return FeedPage(versions, len(versions) + skipped)
