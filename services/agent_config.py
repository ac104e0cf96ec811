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
writes the host tier (``services/tiers/host.py``) and each job process's instance reads
it between steps 1 and 2, on the caller's loop (see "host tier" below).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Awaitable, Callable

import structlog

from services import metrics
from services.agent_ids import validate_agent_id
from services.errors import (
    AgentConfigError,
    AgentNotFoundError,
    ConfigUnavailableError,
    MalformedDocumentError,
    StoreAuthError,
    StoreError,
    store_error_kind,
)
from services.freshness.fleet import FleetCoordinator, FleetRole
from services.freshness.refresher import VersionRefresher
from services.freshness.version_index import VersionIndex
from services.hints import InvalidHintError, parse_version_hint
from services.logging import prompt_fingerprint
from services.records import AgentConfig, PromptResult, PromptSource
from services.service_loop import ServiceLoop
from services.settings import ServiceSettings
from services.store.factory import StoreFactory, default_store_factory
from services.store.protocol import AgentStore, AgentVersion
from services.store.writeback import PromptWriteBack
from services.tiers.greeting import GreetingAudio, GreetingRam
from services.tiers.host import HostTier
from services.tiers.ram import RamTier
from services.tiers.ram_cache import LruDict
from services.tiers.redis import RedisTier

log = structlog.get_logger(__name__)

# After the store fails, loads serve what the tiers hold for this long before trying again.
STORE_REST_SECONDS = 5.0
# A job process that misses the host tier while the owner loads that agent checks this often.
HOST_LOAD_POLL_SECONDS = 0.002

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
        self._host = host  # PROCESS executor: written by the main process, read by job processes
        self._index = VersionIndex()
        self._ram = RamTier(settings.max_entries)
        self._greetings = GreetingRam()
        self._listeners: list[VersionListener] = []
        self._listener_tasks: set[asyncio.Task[None]] = set()
        self._not_found: LruDict[str, float] = LruDict(10_000)  # agent id -> negative entry expiry
        self._loop = ServiceLoop()
        self._closed = False
        self._store_resting_until = 0.0
        # Owned by the service loop, created there in _start_on_loop().
        self._store: AgentStore | None = None
        self._redis: RedisTier | None = None
        self._refresher: VersionRefresher | None = None
        self._fleet: FleetCoordinator | None = None
        self._inflight: dict[tuple[str, float | None], asyncio.Task[PromptResult]] = {}
        self._writeback: PromptWriteBack | None = None
        self._loop.start()
        self._loop.submit(self._start_on_loop(store_factory, run_refresher)).result()

    @classmethod
    def from_env(cls, *, run_refresher: bool = True, host: HostTier | None = None) -> AgentConfigService:
        """Build from the environment (see ``.env.example``); Convex if ``CONVEX_URL`` is set,
        else the embedded agents file."""
        settings = ServiceSettings.from_env()
        return cls(settings, store_factory=default_store_factory(settings), run_refresher=run_refresher, host=host)

    async def _start_on_loop(self, store_factory: StoreFactory, run_refresher: bool) -> None:
        settings = self._settings
        self._store = store_factory()
        self._writeback = PromptWriteBack(self._store)
        if settings.redis_url:
            self._redis = RedisTier(
                settings.redis_url.get_secret_value(),
                prompt_ttl_seconds=max(settings.stale_if_error_seconds, settings.ttl_seconds),
                trust_seconds=self._trust_seconds,
                clock=self._clock,
            )
        if run_refresher:
            if self._redis is not None:
                interval = settings.refresh_seconds
                self._fleet = FleetCoordinator(self._redis, interval_seconds=interval, clock=self._clock)
            self._refresher = VersionRefresher(
                self._store,
                self._index,
                interval_seconds=settings.refresh_seconds,
                on_new_version=self._on_new_version,
                hooks=self._fleet,
                on_confirmed=self._host.heartbeat if self._host is not None and self._host.owner else None,
                clock=self._clock,
            )
            if self._fleet is not None:
                self._fleet.attach(self._refresher)
                await self._fleet.start()
            self._refresher.start()

    # ------------------------------------------------------------------ public API

    async def get_full_prompt(self, agent_id: str, *, updated_at: float | None = None) -> PromptResult:
        """The agent's system prompt. ``updated_at`` is the dispatch's freshness hint."""
        started = time.perf_counter()
        try:
            agent_id = validate_agent_id(agent_id)
            if self._closed:
                raise ConfigUnavailableError(agent_id, "the service is closed")
            hint = _valid_hint(updated_at)
            result = await self._from_ram(agent_id, hint)
            if result is None:
                result = self._from_host(agent_id, hint)  # job processes: a memory map, no I/O
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
        if self._host is None or self._host.owner:
            return False
        warmed = self._host.warm()
        metrics.resolution_counter("host", False).inc(0)
        return warmed

    def known_missing(self, agent_id: str) -> bool:
        """True if the agent is known to be deleted, or the store said recently that it does
        not exist and the change feed has not shown it since (no I/O)."""
        if self._index.is_deleted(agent_id):
            return True
        expiry = self._not_found.peek(agent_id)
        return expiry is not None and self._clock() < expiry and self._index.get(agent_id) is None

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
        found = self._greetings.get(agent_id, key)
        if found is None and self._host is not None and not self._host.owner:
            found = self._host.greeting(agent_id, key)
        return found

    async def shared_greeting_audio(self, agent_id: str, key: str) -> GreetingAudio | None:
        """:meth:`greeting_audio`, else what Redis holds (another host synthesized it);
        one found in Redis is kept in this process's tiers. Call on the service loop."""
        found = self.greeting_audio(agent_id, key)
        if found is None and self._redis is not None:
            found = await self._redis.get_greeting(agent_id, key)
            if found is not None:
                await self.store_greeting(agent_id, found, share=False)
        return found

    async def store_greeting(self, agent_id: str, audio: GreetingAudio, *, share: bool = True) -> None:
        """Keep a synthesized greeting in RAM, the host tier (owner) and Redis, unless its
        version was deleted or superseded meanwhile. Call on the service loop."""
        current = self._index.get(agent_id)
        if self._deleted_since(agent_id, audio.updated_at) or (current is not None and current > audio.updated_at):
            return
        if not self._greetings.put(agent_id, audio):
            return
        if self._host is not None and self._host.owner:
            self._host.put_greeting(agent_id, audio)
        if share and self._redis is not None:
            await self._redis.put_greeting(agent_id, audio)

    def clear_prompt_cache(self, agent_id: str) -> None:
        """Forget one agent in this process (RAM entry, known version, negative entry)."""
        self._ram.discard(agent_id)
        self._greetings.discard(agent_id)
        self._index.forget(agent_id)
        self._not_found.pop(agent_id, None)

    def clear_all_prompt_cache(self) -> None:
        """Forget everything this process holds (e.g. after a template change)."""
        self._ram.clear()
        self._greetings.clear()
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
    def fleet_role(self) -> FleetRole | None:
        """ "leader" or "follower" with Redis and a refresher; None otherwise."""
        return None if self._fleet is None else self._fleet.role

    @property
    def fleet(self) -> FleetCoordinator | None:
        """The fleet membership (Redis and a refresher only), for the simulator and tests."""
        return self._fleet

    @property
    def host_tier(self) -> HostTier | None:
        """The host tier this service writes (main process) or reads (job process), if any."""
        return self._host

    @property
    def ram_entries(self) -> int:
        return len(self._ram)

    @property
    def ram_prompt_bytes(self) -> int:
        """UTF-8 size of the prompts the RAM tier holds (what the load test reports)."""
        return self._ram.prompt_bytes

    # ------------------------------------------------------------------ RAM tier

    def _wanted_version(self, agent_id: str, hint: float | None) -> float | None:
        known = self._index.get(agent_id)
        if hint is None or known is None:
            return hint if known is None else known
        return max(hint, known)

    def _age(self, agent_id: str, version: float, entry_loaded_at: float) -> float:
        confirmed = self._index.confirmed_at(agent_id, version)
        return self._clock() - max(entry_loaded_at, confirmed if confirmed is not None else -math.inf)

    async def _from_ram(self, agent_id: str, hint: float | None) -> PromptResult | None:
        version = self._wanted_version(agent_id, hint)
        if version is None:
            return None
        entry = self._ram.get(agent_id, version)  # no awaits on a hit
        if entry is None or self._age(agent_id, version, entry.loaded_at) >= self._settings.ttl_seconds:
            return None
        return PromptResult(entry.prompt, "ram", version, False, entry.agent)

    async def _ram_put(self, agent: AgentConfig, prompt: str, loaded_at: float) -> None:
        if self._deleted_since(agent.agent_id, agent.updated_at):
            return  # a load that finished after the delete was seen must not bring it back
        if not await self._ram.put(agent, prompt, loaded_at):
            return  # never replace a newer version with an older one
        if self._host is not None and self._host.owner:
            self._host.put_prompt(agent, prompt, loaded_at)  # for this worker's job processes

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
        result = await self._from_ram(agent_id, hint)  # a load may have landed meanwhile
        if result is not None:
            return result
        key = (agent_id, self._wanted_version(agent_id, hint))
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._load_via_host(agent_id, key[1]))
            self._inflight[key] = task
            task.add_done_callback(lambda _t: self._inflight.pop(key, None))
        # Shielded: one caller giving up must not cancel the load others wait for.
        return await asyncio.shield(task)

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

    async def _load(self, agent_id: str, version: float | None) -> PromptResult:
        if self._redis is not None:
            shared = await self._from_redis(agent_id, version)
            if shared is not None:
                return shared
        assert self._store is not None
        if self._clock() < self._store_resting_until:
            # The store just failed: answer from what we hold instead of waiting it out again.
            stale = await self._stale_fallback(agent_id)
            if stale is not None:
                return stale
        try:
            async with asyncio.timeout(3 * self._settings.convex_timeout_seconds):
                record = await self._store.get_agent(agent_id)
                if record is None and self._index.get(agent_id) is not None:
                    # The change feed has seen this agent live: our read raced its creation
                    # (or a replica lagged). Ask once more rather than caching "no such agent".
                    record = await self._store.get_agent(agent_id)
        except (StoreError, TimeoutError) as exc:
            metrics.STORE_ERRORS.labels(operation="get_agent", kind=store_error_kind(exc)).inc()
            if isinstance(exc, StoreAuthError):
                log.error("store_unauthorized", operation="get_agent", error=str(exc))
            if not isinstance(exc, MalformedDocumentError):  # the store, not one document, failed
                self._store_resting_until = self._clock() + STORE_REST_SECONDS
            stale = await self._stale_fallback(agent_id)
            if stale is not None:
                log.warning(
                    "prompt_served_stale", agentId=agent_id, source=stale.source, stale=stale.stale, error=str(exc)
                )
                return stale
            cause = str(exc) or "no answer in time"
            raise ConfigUnavailableError(agent_id, f"store failed and nothing usable is cached: {cause}") from exc
        self._store_resting_until = 0.0
        now = self._clock()
        if record is None:
            if self._settings.not_found_ttl_seconds > 0 and self._index.get(agent_id) is None:
                self._not_found[agent_id] = now + self._settings.not_found_ttl_seconds
            raise AgentNotFoundError(agent_id, "no such agent in the store")
        if self._deleted_since(agent_id, record.updated_at):
            raise AgentNotFoundError(agent_id, "the agent was deleted")  # the read raced the delete
        self._not_found.pop(agent_id, None)
        self._index.observe(agent_id, record.updated_at, now)
        agent = AgentConfig.from_record(record)
        source: PromptSource = "db"
        prompt = record.full_prompt
        if prompt is None:
            assert self._writeback is not None
            prompt = self._writeback.build(record)
            source = "build"
        await self._ram_put(agent, prompt, now)
        if self._redis is not None:
            # Inline, not in the background: a PROCESS-mode job may end (and its process
            # exit) right after this; the shared tier must already hold what it read.
            await self._share(agent, prompt)
        self._notify(agent)
        return PromptResult(prompt, source, record.updated_at, False, agent)

    async def _from_redis(self, agent_id: str, version: float | None) -> PromptResult | None:
        assert self._redis is not None
        # A dispatch hint is a lower bound, never proof that a version is current: ask
        # Redis which version a live watcher vouches for, hint or not.
        shared_version = await self._redis.get_version(agent_id)
        if shared_version is not None:
            self._index.observe(agent_id, shared_version.updated_at, shared_version.confirmed_at)
            wanted = self._wanted_version(agent_id, version)
            if wanted is not None and wanted != version:
                version = wanted
                cached = await self._from_ram(agent_id, version)
                if cached is not None:
                    return cached
        if version is None:
            return None
        # Fresh only if this process knows the version is current (its own index, fed by
        # its refresher or a vouched-for Redis version); a ``p:`` entry's own ``loadedAt``
        # (another process's clock) proves nothing about later edits.
        confirmed = self._index.confirmed_at(agent_id, version)
        if confirmed is None or self._clock() - confirmed >= self._settings.ttl_seconds:
            return None
        shared = await self._redis.get_prompt(agent_id, version)
        if shared is None:
            return None
        await self._ram_put(shared.agent, shared.prompt, confirmed)
        self._notify(shared.agent)
        return PromptResult(shared.prompt, "redis", version, False, shared.agent)

    async def _stale_fallback(self, agent_id: str) -> PromptResult | None:
        """The newest prompt any tier holds for the agent, if within the stale-if-error window.
        Never for a deleted agent: an outage must not bring it back."""
        if self._index.is_deleted(agent_id):
            return None
        current = self._index.get(agent_id)
        version = self._ram.held_version(agent_id)
        entry = self._ram.peek_held(agent_id)
        if version is not None and entry is not None:
            result = self._stale_result(agent_id, version, entry.prompt, entry.agent, entry.loaded_at, "ram", current)
            if result is not None:
                return result
        held = self._host.newest(agent_id) if self._host is not None and not self._host.owner else None
        if held is not None:
            host_version, found = held
            result = self._stale_result(
                agent_id, host_version, found.prompt, found.agent, found.confirmed_at, "host", current
            )
            if result is not None:
                return result
        if self._redis is not None:
            candidates = [v for v in (current, version) if v is not None]
            shared_version = await self._redis.get_version(agent_id, trusted_only=False)
            if shared_version is not None:
                candidates.append(shared_version.updated_at)
            for candidate in sorted(set(candidates), reverse=True):
                shared = await self._redis.get_prompt(agent_id, candidate)
                if shared is not None:
                    return self._stale_result(
                        agent_id, candidate, shared.prompt, shared.agent, shared.loaded_at, "redis", current
                    )
        return None

    def _stale_result(
        self,
        agent_id: str,
        version: float,
        prompt: str,
        agent: AgentConfig,
        loaded_at: float,
        source: PromptSource,
        current: float | None,
    ) -> PromptResult | None:
        age = self._age(agent_id, version, loaded_at)
        if age > self._settings.stale_if_error_seconds:
            return None
        superseded = current is not None and current > version
        return PromptResult(prompt, source, version, age >= self._settings.ttl_seconds or superseded, agent)

    # ------------------------------------------------------------------ host tier (PROCESS executor)

    def _from_host(self, agent_id: str, hint: float | None) -> PromptResult | None:
        """A job process: what the worker's main process holds, if it vouches for it."""
        if self._host is None or self._host.owner:
            return None
        found = self._host.lookup(
            agent_id, hint, trust_seconds=self._trust_seconds, fresh_seconds=self._settings.ttl_seconds
        )
        if found is None:
            return None
        return PromptResult(found.prompt, "host", found.agent.updated_at, False, found.agent)

    @property
    def _trust_seconds(self) -> float:
        """How long a shared tier's heartbeat vouches for its versions (host tier and Redis)."""
        return max(5 * self._settings.refresh_seconds, 10.0)

    async def _load_via_host(self, agent_id: str, version: float | None) -> PromptResult:
        """The main process marks the agent as loading for its job processes; a job process
        that missed waits for such a load to land in the host tier before reading itself."""
        host = self._host
        if host is None:
            return await self._load(agent_id, version)
        if not host.owner:
            limit = 3 * self._settings.convex_timeout_seconds
            # Polled: another process's write has no event to wait on (LMDB has no notification).
            while (since := host.loading_since(agent_id)) is not None and self._clock() - since < limit:  # noqa: ASYNC110
                await asyncio.sleep(HOST_LOAD_POLL_SECONDS)
            found = self._from_host(agent_id, version)
            return found if found is not None else await self._load(agent_id, version)
        host.mark_loading(agent_id, True)
        try:
            return await self._load(agent_id, version)
        finally:
            host.mark_loading(agent_id, False)

    # ------------------------------------------------------------------ refresher hooks

    def _deleted_since(self, agent_id: str, updated_at: float) -> bool:
        """True if the agent's tombstone is at or after ``updated_at``."""
        if not self._index.is_deleted(agent_id):
            return False
        tombstone = self._index.newest_stamp(agent_id)
        return tombstone is not None and tombstone >= updated_at

    async def _drop_deleted(self, row: AgentVersion) -> None:
        """The change feed says the agent was deleted: every tier lets go of it now."""
        known = self._index.get(row.agent_id)
        newly = self._index.observe_deleted(row.agent_id, row.updated_at)
        if not self._index.is_deleted(row.agent_id):
            return  # a newer live version exists: this tombstone is old news
        held = self._ram.discard(row.agent_id)
        self._greetings.discard(row.agent_id)
        if self._settings.not_found_ttl_seconds > 0:
            self._not_found[row.agent_id] = self._clock() + self._settings.not_found_ttl_seconds
        if self._redis is not None:
            await self._redis.forget_agent(row.agent_id, [v for v in (held, known) if v is not None])
        if self._host is not None and self._host.owner:
            self._host.forget_agent(row.agent_id)
        if newly:
            log.info("agent_deleted", agentId=row.agent_id, updatedAt=row.updated_at, held=held is not None)

    async def _on_new_version(self, row: AgentVersion, polled_at: float) -> None:
        if row.deleted:
            await self._drop_deleted(row)
            return
        self._not_found.pop(row.agent_id, None)
        self._greetings.discard(row.agent_id, older_than=row.updated_at)  # an edit: that sound is gone
        if self._ram.held_version(row.agent_id) is not None:
            # Hot agent: load the new version before the index points at it, so no join
            # waits for the store. The load itself records the version.
            try:
                await self._resolve_on_loop(row.agent_id, row.updated_at)
                return
            except AgentConfigError as exc:
                log.warning("prefetch_failed", agentId=row.agent_id, error=str(exc))
        self._index.observe(row.agent_id, row.updated_at, polled_at)
        if self._host is not None and self._host.owner:
            self._host.record_version(row.agent_id, row.updated_at, polled_at)

    async def _share(self, agent: AgentConfig, prompt: str) -> None:
        assert self._redis is not None
        await self._redis.put_prompt(agent.agent_id, agent.updated_at, prompt, agent)
        await self._redis.record_versions([AgentVersion(agent.agent_id, agent.updated_at)])

    async def _close_on_loop(self) -> None:
        for task in list(self._listener_tasks):
            task.cancel()
        await asyncio.gather(*self._listener_tasks, return_exceptions=True)
        if self._refresher is not None:
            await self._refresher.aclose()
        if self._fleet is not None:
            await self._fleet.aclose()
        if self._writeback is not None:
            await self._writeback.flush()
        if self._redis is not None:
            await self._redis.aclose()
        if self._store is not None:
            await self._store.aclose()

    # For tests and the loadtest: run one refresher poll now.
    async def refresh_now(self) -> list[AgentVersion]:
        if self._refresher is None:
            return []
        return await self._loop.run(self._refresher.poll_once())


def _valid_hint(updated_at: object) -> float | None:
    try:
        return parse_version_hint(updated_at)
    except InvalidHintError as exc:
        log.warning("updated_at_hint_ignored", reason=str(exc))
        return None
