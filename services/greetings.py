"""Greeting audio through the tiers: RAM, the host tier, Redis.

A job reads only what this process or its host holds (no I/O, no awaits: a job never
waits for the cache); the main process also asks Redis (another host synthesized it)
and keeps what it synthesizes or finds in every tier it writes. A greeting whose version
was deleted or superseded meanwhile is kept nowhere.
"""

from __future__ import annotations

from services.freshness.rule import FreshnessRule
from services.freshness.version_index import VersionIndex
from services.tiers.greeting import GreetingAudio, GreetingRam
from services.tiers.host_role import NoHostTier
from services.tiers.redis import RedisTier


class GreetingTiers:
    def __init__(self, index: VersionIndex, fresh: FreshnessRule, host: NoHostTier) -> None:
        self._index = index
        self._fresh = fresh
        self._host = host
        self.ram = GreetingRam()
        self.redis: RedisTier | None = None
        """Set on the service loop once Redis is connected."""

    def local(self, agent_id: str, key: str) -> GreetingAudio | None:
        """What this process's RAM or the host tier holds (job processes read the latter)."""
        found = self.ram.get(agent_id, key)
        return found if found is not None else self._host.greeting(agent_id, key)

    async def shared(self, agent_id: str, key: str) -> GreetingAudio | None:
        """:meth:`local`, else Redis; one found in Redis is kept in this process's tiers."""
        found = self.local(agent_id, key)
        if found is None and self.redis is not None:
            found = await self.redis.get_greeting(agent_id, key)
            if found is not None:
                await self.store(agent_id, found, share=False)
        return found

    async def store(self, agent_id: str, audio: GreetingAudio, *, share: bool) -> None:
        """Keep ``audio`` in RAM, the host tier (owner) and, if ``share``, Redis."""
        current = self._index.get(agent_id)
        if self._fresh.deleted_since(agent_id, audio.updated_at) or (
            current is not None and current > audio.updated_at
        ):
            return
        if not self.ram.put(agent_id, audio):
            return
        self._host.put_greeting(agent_id, audio)
        if share and self.redis is not None:
            await self.redis.put_greeting(agent_id, audio)
