"""The miss path: how one agent version is loaded when the caller's tiers miss.

Redis first (fresh only while this process has confirmed the version within the TTL),
then the store (unless its breaker is open), else the newest prompt any tier holds
(stale if error). What is loaded is written to the mirrors: RAM, the host tier (its
owner) and Redis, and handed to the version listeners. Runs on the service loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog

from services import metrics
from services.clients import LoopClients
from services.errors import (
    AgentNotFoundError,
    ConfigUnavailableError,
    MalformedDocumentError,
    StoreAuthError,
    StoreError,
    store_error_kind,
)
from services.freshness.rule import FreshnessRule
from services.freshness.version_index import VersionIndex
from services.negative_cache import NegativeCache
from services.records import AgentConfig, AgentRecord, PromptResult, PromptSource
from services.stale_if_error import newest_held
from services.store.breaker import StoreBreaker
from services.store.protocol import AgentStore, AgentVersion
from services.tiers.host_role import NoHostTier
from services.tiers.protocols import LocalTier

# The service's events: they keep the logger name they have always been logged under.
log = structlog.get_logger("services.agent_config")


class VersionLoader:
    def __init__(
        self,
        *,
        index: VersionIndex,
        fresh: FreshnessRule,
        ram: LocalTier,
        host: NoHostTier,
        not_found: NegativeCache,
        notify: Callable[[AgentConfig], None],
        store_timeout_seconds: float,
        clock: Callable[[], float],
    ) -> None:
        self._index = index
        self._fresh = fresh
        self._ram = ram
        self._host = host
        self._not_found = not_found
        self._notify = notify
        self._store_timeout_seconds = store_timeout_seconds
        self._clock = clock
        self._breaker = StoreBreaker()
        self.clients: LoopClients | None = None
        """Set on the service loop once its clients are started."""

    async def from_ram(self, agent_id: str, hint: float | None) -> PromptResult | None:
        """The RAM tier's entry for the wanted version, if fresh. No awaits on a hit."""
        version = self._fresh.wanted_version(agent_id, hint)
        if version is None:
            return None
        entry = self._ram.get(agent_id, version)
        if entry is None or not self._fresh.is_fresh(agent_id, version, entry.loaded_at):
            return None
        return PromptResult(entry.prompt, "ram", version, False, entry.agent)

    async def ram_put(self, agent: AgentConfig, prompt: str, loaded_at: float) -> None:
        """Keep a loaded version in RAM and, for this worker's job processes, the host tier."""
        if self._fresh.deleted_since(agent.agent_id, agent.updated_at):
            return  # a load that finished after the delete was seen must not bring it back
        if not await self._ram.put(agent, prompt, loaded_at):
            return  # never replace a newer version with an older one
        self._host.put_prompt(agent, prompt, loaded_at)

    async def load(self, agent_id: str, version: float | None) -> PromptResult:
        """Redis, then the store, then stale if error; raises when none of them answers."""
        assert self.clients is not None
        if self.clients.redis is not None:
            shared = await self._from_redis(agent_id, version)
            if shared is not None:
                return shared
        if self._breaker.resting(self._clock()):
            # The store just failed: answer from what we hold instead of waiting it out again.
            stale = await self._stale_fallback(agent_id)
            if stale is not None:
                return stale
        try:
            record = await self._read_store(self.clients.store, agent_id)
        except (StoreError, TimeoutError) as exc:
            return await self._store_failed(agent_id, exc)
        self._breaker.succeeded()
        now = self._clock()
        if record is None:
            if self._index.get(agent_id) is None:
                self._not_found.remember(agent_id, now)
            raise AgentNotFoundError(agent_id, "no such agent in the store")
        if self._fresh.deleted_since(agent_id, record.updated_at):
            raise AgentNotFoundError(agent_id, "the agent was deleted")  # the read raced the delete
        self._not_found.forget(agent_id)
        self._index.observe(agent_id, record.updated_at, now)
        agent = AgentConfig.from_record(record)
        source: PromptSource = "db"
        prompt = record.full_prompt
        if prompt is None:
            prompt = self.clients.writeback.build(record)
            source = "build"
        await self.ram_put(agent, prompt, now)
        if self.clients.redis is not None:
            # Inline, not in the background: a PROCESS-mode job may end (and its process
            # exit) right after this; the shared tier must already hold what it read.
            await self.clients.redis.put_prompt(agent.agent_id, agent.updated_at, prompt, agent)
            await self.clients.redis.record_versions([AgentVersion(agent.agent_id, agent.updated_at)])
        self._notify(agent)
        return PromptResult(prompt, source, record.updated_at, False, agent)

    async def _read_store(self, store: AgentStore, agent_id: str) -> AgentRecord | None:
        async with asyncio.timeout(3 * self._store_timeout_seconds):
            record = await store.get_agent(agent_id)
            if record is None and self._index.get(agent_id) is not None:
                # The change feed has seen this agent live: our read raced its creation
                # (or a replica lagged). Ask once more rather than caching "no such agent".
                record = await store.get_agent(agent_id)
        return record

    async def _store_failed(self, agent_id: str, exc: StoreError | TimeoutError) -> PromptResult:
        metrics.STORE_ERRORS.labels(operation="get_agent", kind=store_error_kind(exc)).inc()
        if isinstance(exc, StoreAuthError):
            log.error("store_unauthorized", operation="get_agent", error=str(exc))
        if not isinstance(exc, MalformedDocumentError):  # the store, not one document, failed
            self._breaker.failed(self._clock())
        stale = await self._stale_fallback(agent_id)
        if stale is not None:
            log.warning("prompt_served_stale", agentId=agent_id, source=stale.source, stale=stale.stale, error=str(exc))
            return stale
        cause = str(exc) or "no answer in time"
        raise ConfigUnavailableError(agent_id, f"store failed and nothing usable is cached: {cause}") from exc

    async def _from_redis(self, agent_id: str, version: float | None) -> PromptResult | None:
        assert self.clients is not None and self.clients.redis is not None
        redis = self.clients.redis
        # A dispatch hint is a lower bound, never proof that a version is current: ask
        # Redis which version a live watcher vouches for, hint or not.
        shared_version = await redis.get_version(agent_id)
        if shared_version is not None:
            self._index.observe(agent_id, shared_version.updated_at, shared_version.confirmed_at)
            wanted = self._fresh.wanted_version(agent_id, version)
            if wanted is not None and wanted != version:
                version = wanted
                cached = await self.from_ram(agent_id, version)
                if cached is not None:
                    return cached
        if version is None:
            return None
        # Fresh only if this process knows the version is current (its own index, fed by
        # its refresher or a vouched-for Redis version); a ``p:`` entry's own ``loadedAt``
        # (another process's clock) proves nothing about later edits.
        confirmed = self._fresh.confirmed_fresh(agent_id, version)
        if confirmed is None:
            return None
        shared = await redis.get_prompt(agent_id, version)
        if shared is None:
            return None
        await self.ram_put(shared.agent, shared.prompt, confirmed)
        self._notify(shared.agent)
        return PromptResult(shared.prompt, "redis", version, False, shared.agent)

    async def _stale_fallback(self, agent_id: str) -> PromptResult | None:
        redis = None if self.clients is None else self.clients.redis
        return await newest_held(
            agent_id, rule=self._fresh, index=self._index, ram=self._ram, host=self._host, redis=redis
        )
