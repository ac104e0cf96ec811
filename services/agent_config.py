"""AgentConfigService: an agent's prompt and config, through RAM, Redis and the store.

How a join is served (see README "How a prompt is resolved"):

1. On the caller's own loop, with no I/O: the agent's current version comes from the
   dispatch hint or the version index; ``agentId:updatedAt`` is looked up in the RAM
   tier; an entry the store confirmed within the TTL is returned at once.
2. Otherwise the request moves to the service loop (one thread per process, owning
   every client), where concurrent misses for one key share a single load: Redis
   (if configured), then the store. A legacy agent's prompt is built, returned, and
   written back in the background.
3. If the store fails, the newest prompt any tier holds is served, flagged stale
   once past its TTL, for up to the stale-if-error window.

One instance serves a whole worker process: jobs on any thread and any loop may
call it concurrently. Under the PROCESS executor the main process's instance also
writes the host tier (``services/tiers/host_owner.py``, ``host_reader.py``) and each job process's instance reads
it between steps 1 and 2, on the caller's loop (``services/tiers/host_role.py``).

This module is the orchestration; the rules live beside it: the freshness rule
(``freshness/rule.py``), the miss path (``loader.py``), stale if error
(``stale_if_error.py``), the negative cache, single flight, the store's breaker
(``store/breaker.py``), greeting audio (``greetings.py``) and the clients the service
loop owns (``clients.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

import structlog

from services import metrics
from services.agent_ids import validate_agent_id
from services.clients import LoopClients
from services.errors import (
    AgentConfigError,
    AgentNotFoundError,
    ConfigUnavailableError,
)
from services.freshness.fleet import FleetCoordinator
from services.freshness.rule import FreshnessRule
from services.freshness.version_index import VersionIndex
from services.greetings import GreetingTiers
from services.hints import InvalidHintError, parse_version_hint
from services.loader import VersionLoader
from services.logging import prompt_fingerprint
from services.negative_cache import NegativeCache
from services.records import AgentConfig, PromptResult
from services.service_loop import ServiceLoop
from services.settings import ServiceSettings
from services.single_flight import SingleFlight
from services.stats import ServiceStats
from services.store.factory import StoreFactory, default_store_factory
from services.store.protocol import AgentVersion
from services.tiers.greeting import GreetingAudio
from services.tiers.host_owner import HostTierOwner
from services.tiers.host_reader import HostTier
from services.tiers.host_role import host_role
from services.tiers.ram import RamTier
from services.tiers.redis import RedisTier

log = structlog.get_logger(__name__)

VersionListener = Callable[[AgentConfig], Awaitable[None]]
"""Called on the service loop with each agent version this process loads (see
:meth:`AgentConfigService.add_version_listener`)."""


class AgentConfigService:
    def __init__(
        self,
        settings: ServiceSettings,
        *,
        store_factory: StoreFactory,
        run_refresher: bool = True,
        clock: Callable[[], float] = time.time,
        host: HostTier | None = None,
    ) -> None:
        self._settings = settings
        self._clock = clock
        # PROCESS executor: written by the main process, read by job processes.
        self._host = host_role(
            host,
            trust_seconds=self._trust_seconds,
            fresh_seconds=settings.ttl_seconds,
            load_wait_seconds=3 * settings.convex_timeout_seconds,
            clock=clock,
        )
        self._index = VersionIndex()
        self._fresh = FreshnessRule(
            self._index,
            ttl_seconds=settings.ttl_seconds,
            stale_if_error_seconds=settings.stale_if_error_seconds,
            clock=clock,
        )
        self._ram = RamTier(settings.max_entries)
        self._greetings = GreetingTiers(self._index, self._fresh, self._host)
        self._listeners: list[VersionListener] = []
        self._listener_tasks: set[asyncio.Task[None]] = set()
        self._not_found = NegativeCache(settings.not_found_ttl_seconds)
        self._loop = ServiceLoop()
        self._closed = False
        self._loader = VersionLoader(
            index=self._index,
            fresh=self._fresh,
            ram=self._ram,
            host=self._host,
            not_found=self._not_found,
            notify=self._notify,
            store_timeout_seconds=settings.convex_timeout_seconds,
            clock=clock,
        )
        self._inflight: SingleFlight[tuple[str, float | None], PromptResult] = SingleFlight()
        # Owned by the service loop, created there in _start_on_loop().
        self._clients: LoopClients | None = None
        self._redis: RedisTier | None = None
        self._fleet: FleetCoordinator | None = None
        self._loop.start()
        self._loop.submit(self._start_on_loop(store_factory, run_refresher)).result()
        metrics.export_stats(self.stats)

    @classmethod
    def from_env(cls, *, run_refresher: bool = True, host: HostTier | None = None) -> AgentConfigService:
        """Build from the environment (see ``.env.example``); Convex if ``CONVEX_URL`` is set,
        else the embedded agents file."""
        settings = ServiceSettings.from_env()
        return cls(settings, store_factory=default_store_factory(settings), run_refresher=run_refresher, host=host)

    async def _start_on_loop(self, store_factory: StoreFactory, run_refresher: bool) -> None:
        self._clients = await LoopClients.start(
            self._settings,
            store_factory,
            index=self._index,
            run_refresher=run_refresher,
            on_new_version=self._on_new_version,
            on_confirmed=self._host.on_confirmed,
            trust_seconds=self._trust_seconds,
            clock=self._clock,
        )
        self._loader.clients = self._clients
        self._redis = self._greetings.redis = self._clients.redis
        self._fleet = self._clients.fleet

    # ------------------------------------------------------------------ public API

    async def get_full_prompt(self, agent_id: str, *, updated_at: float | None = None) -> PromptResult:
        """The agent's system prompt. ``updated_at`` is the dispatch's freshness hint."""
        started = time.perf_counter()
        try:
            agent_id = validate_agent_id(agent_id)
            if self._closed:
                raise ConfigUnavailableError(agent_id, "the service is closed")
            hint = _valid_hint(updated_at)
            result = await self._loader.from_ram(agent_id, hint)
            if result is None:
                result = self._host.lookup(agent_id, hint)  # job processes: a memory map, no I/O
            if result is None:
                self._raise_if_known_missing(agent_id, hint)
                result = await self._loop.run(self._resolve_on_loop(agent_id, hint))
        except AgentConfigError as exc:
            metrics.FAILURES.labels(error=type(exc).__name__).inc()
            log.warning("prompt_resolution_failed", agentId=exc.agent_id, error=type(exc).__name__, reason=str(exc))
            raise
        latency = time.perf_counter() - started
        metrics.resolution_counter(result.source, result.stale).inc()
        metrics.resolve_histogram(result.source).observe(latency)
        log.info(
            "prompt_resolved",
            agentId=agent_id,
            source=result.source,
            cacheHit=result.source in ("ram", "host", "redis"),
            latencyMs=round(latency * 1000, 3),
            stale=result.stale,
            updatedAt=result.updated_at,
            promptHash=prompt_fingerprint(result.prompt),
            promptChars=len(result.prompt),
        )
        return result

    async def get_agent_config(self, agent_id: str) -> AgentConfig:
        """The agent's name and config, from the same tiers (and the same read) as its prompt."""
        return (await self.get_full_prompt(agent_id)).agent

    def warm_job_process(self) -> bool:
        """A PROCESS-mode job process, in ``prewarm``: walk the hit path once (a host-tier
        read and decode, the metric children it records) so that the process's first
        lookup does not pay the copy-on-write faults and first-use costs of a process
        forked from the forkserver. Records nothing. False if there was nothing to read."""
        return self._host.warm()

    def known_missing(self, agent_id: str) -> bool:
        """True if the agent is known to be deleted, or the store said recently that it does
        not exist and the change feed has not shown it since (no I/O)."""
        if self._index.is_deleted(agent_id):
            return True
        return self._not_found.holds(agent_id, self._clock()) and self._index.get(agent_id) is None

    def cached_organization(self, agent_id: str) -> str | None:
        """The organization of an agent this process holds in RAM, else ``None`` (no I/O)."""
        entry = self._ram.peek_held(agent_id)
        return None if entry is None else entry.agent.organization_id

    def prefetch(self, agent_id: str, *, updated_at: float | None = None) -> None:
        """Start resolving in the background (e.g. while a job process starts); errors are
        left for the real call to meet."""
        try:
            validate_agent_id(agent_id)
        except AgentConfigError:
            return
        if self._closed:
            return
        self._loop.submit(self._prefetch_on_loop(agent_id, _valid_hint(updated_at)))

    def add_version_listener(self, listener: VersionListener) -> None:
        """Call ``listener`` (on the service loop, in the background) with every agent
        version this process loads from Redis or the store, and with the version a
        ``prefetch`` resolves: the worker's main process synthesizes greetings there."""
        self._listeners.append(listener)

    def greeting_audio(self, agent_id: str, key: str) -> GreetingAudio | None:
        """The greeting audio ``key`` names, if this process's RAM or the host tier holds
        it; no I/O and no awaits (a job never waits for the cache)."""
        return self._greetings.local(agent_id, key)

    async def shared_greeting_audio(self, agent_id: str, key: str) -> GreetingAudio | None:
        """:meth:`greeting_audio`, else what Redis holds (another host synthesized it);
        one found in Redis is kept in this process's tiers. Call on the service loop."""
        return await self._greetings.shared(agent_id, key)

    async def store_greeting(self, agent_id: str, audio: GreetingAudio, *, share: bool = True) -> None:
        """Keep a synthesized greeting in RAM, the host tier (owner) and Redis, unless its
        version was deleted or superseded meanwhile. Call on the service loop."""
        await self._greetings.store(agent_id, audio, share=share)

    def clear_prompt_cache(self, agent_id: str) -> None:
        """Forget one agent in this process (RAM entry, known version, negative entry)."""
        self._ram.discard(agent_id)
        self._greetings.ram.discard(agent_id)
        self._index.forget(agent_id)
        self._not_found.forget(agent_id)

    def clear_all_prompt_cache(self) -> None:
        """Forget everything this process holds (e.g. after a template change)."""
        self._ram.clear()
        self._greetings.ram.clear()
        self._index.clear()
        self._not_found.clear()

    async def aclose(self) -> None:
        """Flush pending write-backs, stop the refresher, close clients. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            await self._loop.run(self._close_on_loop())
        finally:
            self._loop.stop()

    @property
    def host_tier(self) -> HostTier | None:
        """The host tier this service writes (main process) or reads (job process), if any."""
        return self._host.tier

    def stats(self) -> ServiceStats:
        """What this process holds and how its fleet membership stands (no I/O); also
        served as Prometheus gauges."""
        owner = self._host.tier if isinstance(self._host.tier, HostTierOwner) else None
        return ServiceStats(
            ram_entries=len(self._ram),
            ram_prompt_bytes=self._ram.prompt_bytes,
            greeting_entries=len(self._greetings.ram),
            greeting_bytes=self._greetings.ram.audio_bytes,
            host_entries=None if owner is None else owner.entries,
            host_bytes=None if owner is None else owner.value_bytes,
            fleet=None if self._fleet is None else self._fleet.stats(),
        )

    # ------------------------------------------------------------------ caller's loop

    def _raise_if_known_missing(self, agent_id: str, hint: float | None) -> None:
        # A hint does not bypass this: anyone can put any updatedAt in dispatch metadata,
        # and an unknown agent must not cost a store read per job. A new agent is let in
        # by the change feed, which clears its negative entry within the refresh interval.
        if self._index.is_deleted(agent_id):
            raise AgentNotFoundError(agent_id, "the agent was deleted")
        if self.known_missing(agent_id):
            raise AgentNotFoundError(agent_id, "no such agent (cached answer)")

    # ------------------------------------------------------------------ service loop

    async def _resolve_on_loop(self, agent_id: str, hint: float | None) -> PromptResult:
        if self._index.is_deleted(agent_id):
            raise AgentNotFoundError(agent_id, "the agent was deleted")
        result = await self._loader.from_ram(agent_id, hint)  # a load may have landed meanwhile
        if result is not None:
            return result
        version = self._fresh.wanted_version(agent_id, hint)
        # The main process marks the agent as loading for its job processes; a job process
        # that missed waits for such a load to land in the host tier before loading itself.
        return await self._inflight.run(
            (agent_id, version),
            lambda: self._host.load(agent_id, version, lambda: self._loader.load(agent_id, version)),
        )

    async def _prefetch_on_loop(self, agent_id: str, hint: float | None) -> None:
        with contextlib.suppress(AgentConfigError):
            result = await self._resolve_on_loop(agent_id, hint)
            if result.source == "ram":  # a load (from Redis or the store) has notified already
                self._notify(result.agent)

    def _notify(self, agent: AgentConfig) -> None:
        """Hand a loaded version to the listeners, in the background (on the service loop)."""
        for listener in self._listeners:
            task = asyncio.get_running_loop().create_task(self._run_listener(listener, agent))
            self._listener_tasks.add(task)
            task.add_done_callback(self._listener_tasks.discard)

    async def _run_listener(self, listener: VersionListener, agent: AgentConfig) -> None:
        try:
            await listener(agent)
        except Exception as exc:  # noqa: BLE001 - a listener's failure never touches a join
            log.warning("version_listener_failed", agentId=agent.agent_id, error=type(exc).__name__)

    @property
    def _trust_seconds(self) -> float:
        """How long a shared tier's heartbeat vouches for its versions (host tier and Redis)."""
        return max(5 * self._settings.refresh_seconds, 10.0)

    # ------------------------------------------------------------------ refresher hooks

    async def _drop_deleted(self, row: AgentVersion) -> None:
        """The change feed says the agent was deleted: every tier lets go of it now."""
        known = self._index.get(row.agent_id)
        newly = self._index.observe_deleted(row.agent_id, row.updated_at)
        if not self._index.is_deleted(row.agent_id):
            return  # a newer live version exists: this tombstone is old news
        held = self._ram.discard(row.agent_id)
        self._greetings.ram.discard(row.agent_id)
        self._not_found.remember(row.agent_id, self._clock())
        if self._redis is not None:
            await self._redis.forget_agent(row.agent_id, [v for v in (held, known) if v is not None])
        self._host.forget_agent(row.agent_id)
        if newly:
            log.info("agent_deleted", agentId=row.agent_id, updatedAt=row.updated_at, held=held is not None)

    async def _on_new_version(self, row: AgentVersion, polled_at: float) -> None:
        if row.deleted:
            await self._drop_deleted(row)
            return
        self._not_found.forget(row.agent_id)
        self._greetings.ram.discard(row.agent_id, older_than=row.updated_at)  # an edit: that sound is gone
        if self._ram.held_version(row.agent_id) is not None:
            # Hot agent: load the new version before the index points at it, so no join
            # waits for the store. The load itself records the version.
            try:
                await self._resolve_on_loop(row.agent_id, row.updated_at)
                return
            except AgentConfigError as exc:
                log.warning("prefetch_failed", agentId=row.agent_id, error=str(exc))
        self._index.observe(row.agent_id, row.updated_at, polled_at)
        self._host.record_version(row.agent_id, row.updated_at, polled_at)

    async def _close_on_loop(self) -> None:
        for task in list(self._listener_tasks):
            task.cancel()
        await asyncio.gather(*self._listener_tasks, return_exceptions=True)
        if self._clients is not None:
            await self._clients.aclose()


def _valid_hint(updated_at: object) -> float | None:
    try:
        return parse_version_hint(updated_at)
    except InvalidHintError as exc:
        log.warning("updated_at_hint_ignored", reason=str(exc))
        return None
