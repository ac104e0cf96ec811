"""The clients the service loop owns: the store, the write-back, Redis, the refresher and
the fleet membership.

They are created on the service loop (their connections belong to it) and closed there,
in the reverse order of their use: the refresher stops polling before the fleet lets go
of its lease, pending write-backs are flushed before the store's client closes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from services.freshness.fleet import FleetCoordinator
from services.freshness.refresher import VersionRefresher
from services.freshness.version_index import VersionIndex
from services.settings import ServiceSettings
from services.store.factory import StoreFactory
from services.store.protocol import AgentStore, AgentVersion
from services.store.writeback import PromptWriteBack
from services.tiers.redis import RedisTier


@dataclass(slots=True)
class LoopClients:
    store: AgentStore
    writeback: PromptWriteBack
    redis: RedisTier | None
    """The shared tier, when ``REDIS_URL`` is set."""
    refresher: VersionRefresher | None
    """The change-feed poller, unless the service was built without one."""
    fleet: FleetCoordinator | None
    """Which host polls for all (Redis and a refresher only)."""

    @classmethod
    async def start(
        cls,
        settings: ServiceSettings,
        store_factory: StoreFactory,
        *,
        index: VersionIndex,
        run_refresher: bool,
        on_new_version: Callable[[AgentVersion, float], Awaitable[None]],
        on_confirmed: Callable[[float], None] | None,
        trust_seconds: float,
        clock: Callable[[], float],
    ) -> LoopClients:
        """Create every client and start the refresher (and the fleet). Call on the service loop."""
        store = store_factory()
        redis = None
        if settings.redis_url:
            redis = RedisTier(
                settings.redis_url.get_secret_value(),
                prompt_ttl_seconds=max(settings.stale_if_error_seconds, settings.ttl_seconds),
                trust_seconds=trust_seconds,
                clock=clock,
            )
        refresher = fleet = None
        if run_refresher:
            if redis is not None:
                fleet = FleetCoordinator(redis, interval_seconds=settings.refresh_seconds, clock=clock)
            refresher = VersionRefresher(
                store,
                index,
                interval_seconds=settings.refresh_seconds,
                on_new_version=on_new_version,
                hooks=fleet,
                on_confirmed=on_confirmed,
                clock=clock,
            )
            if fleet is not None:
                fleet.attach(refresher)
                await fleet.start()
            refresher.start()
        return cls(store, PromptWriteBack(store), redis, refresher, fleet)

    async def aclose(self) -> None:
        """Stop the refresher and the fleet, flush write-backs, close Redis and the store."""
        if self.refresher is not None:
            await self.refresher.aclose()
        if self.fleet is not None:
            await self.fleet.aclose()
        await self.writeback.flush()
        if self.redis is not None:
            await self.redis.aclose()
        await self.store.aclose()
