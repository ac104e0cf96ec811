"""The RAM tier: this process's prompts, one version per agent, keyed ``agentId:updatedAt``.

aiocache's memory backend on a bounded LRU mapping (``services/tiers/ram_cache.py``) holds the
entries; this module adds the one rule the service needs on top: per agent, only the
newest version is held, and a late load of an older version never replaces it. The tier
does no I/O and reads no clock: whether an entry is still fresh is the service's call
(the version index knows when the store last confirmed it).
"""

from __future__ import annotations

from typing import Any

from services.records import AgentConfig, cache_key
from services.tiers.entry import TierEntry
from services.tiers.ram_cache import BoundedMemoryCache


class RamTier:
    """Safe from any thread: the mapping underneath takes its own lock."""

    def __init__(self, max_entries: int) -> None:
        self._held: dict[str, float] = {}  # agent id -> the version held
        self._cache = BoundedMemoryCache(max_entries, on_evict=self._on_evict)

    def held_version(self, agent_id: str) -> float | None:
        return self._held.get(agent_id)

    def get(self, agent_id: str, version: float) -> TierEntry | None:
        """The entry for exactly this version, counted as a use (LRU); no awaits."""
        entry: TierEntry | None = self._cache.get_now(cache_key(agent_id, version))
        return entry

    def peek_held(self, agent_id: str) -> TierEntry | None:
        """The agent's held entry without counting a use (stale-if-error, organization)."""
        version = self._held.get(agent_id)
        if version is None:
            return None
        entry = self._cache.peek(cache_key(agent_id, version))
        return entry if isinstance(entry, TierEntry) else None

    async def put(self, agent: AgentConfig, prompt: str, loaded_at: float) -> bool:
        """Hold this version, dropping the agent's older one; False if a newer one is held."""
        previous = self._held.get(agent.agent_id)
        if previous is not None and previous > agent.updated_at:
            return False
        self._held[agent.agent_id] = agent.updated_at
        await self._cache.set(cache_key(agent.agent_id, agent.updated_at), TierEntry(prompt, agent, loaded_at))
        if previous is not None and previous != agent.updated_at:
            await self._cache.delete(cache_key(agent.agent_id, previous))
        return True

    def discard(self, agent_id: str) -> float | None:
        """Let go of the agent; the version that was held, if any."""
        version = self._held.pop(agent_id, None)
        if version is not None:
            self._cache.discard(cache_key(agent_id, version))
        return version

    def clear(self) -> None:
        self._cache.clear_entries()
        self._held.clear()

    def __len__(self) -> int:
        return len(self._cache)

    @property
    def prompt_bytes(self) -> int:
        """UTF-8 size of the prompts held."""
        return sum(len(entry.prompt.encode("utf-8")) for entry in self._cache.entries())

    def _on_evict(self, key: str, value: Any) -> None:
        if isinstance(value, TierEntry) and self._held.get(value.agent.agent_id) == value.agent.updated_at:
            self._held.pop(value.agent.agent_id, None)
