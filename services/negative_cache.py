"""The negative cache: agents the store said do not exist, remembered for a short while.

Why: an unknown agent id in dispatch metadata must not cost a store read per job. A new
agent is let in by the change feed, which forgets its entry within the refresh interval.
No I/O and no clock of its own: the caller passes the time.
"""

from __future__ import annotations

from services.tiers.ram_cache import LruDict


class NegativeCache:
    """Agent id -> when its "no such agent" answer expires; at most ``max_entries`` ids."""

    def __init__(self, ttl_seconds: float, max_entries: int = 10_000) -> None:
        self._ttl_seconds = ttl_seconds
        self._expiry: LruDict[str, float] = LruDict(max_entries)

    def remember(self, agent_id: str, now: float) -> None:
        """The store (or the change feed's tombstone) said the agent is absent; a TTL of 0
        turns the cache off."""
        if self._ttl_seconds > 0:
            self._expiry[agent_id] = now + self._ttl_seconds

    def holds(self, agent_id: str, now: float) -> bool:
        """True while the agent's "no such agent" answer is younger than the TTL."""
        expiry = self._expiry.peek(agent_id)
        return expiry is not None and now < expiry

    def forget(self, agent_id: str) -> None:
        self._expiry.pop(agent_id, None)

    def clear(self) -> None:
        self._expiry.clear()
