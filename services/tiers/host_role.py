"""What the service does with the host tier, by process: nothing, own it, or read it.

Under the PROCESS executor the worker's main process owns the host tier (it writes what
its service loads, marks the agents it is loading, and heartbeats on every change-feed
poll) and each job process reads it (between its RAM tier and the service loop). The
THREAD executor has no host tier. One class per role, chosen once at start-up, so the
service asks the same questions whatever the process and never branches on a flag.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from services import metrics
from services.records import AgentConfig, PromptResult
from services.tiers.entry import TierEntry
from services.tiers.greeting import GreetingAudio
from services.tiers.host_owner import HostTierOwner
from services.tiers.host_reader import HostTier, HostTierReader

# A job process that misses the host tier while the owner loads that agent checks this often.
HOST_LOAD_POLL_SECONDS = 0.002

Load = Callable[[], Awaitable[PromptResult]]


class NoHostTier:
    """No host tier: every read misses, every write is dropped, loads run at once."""

    tier: HostTier | None = None

    def lookup(self, agent_id: str, hint: float | None) -> PromptResult | None:
        """A fresh prompt the owner vouches for (reader only; no I/O, no awaits)."""
        return None

    def newest(self, agent_id: str) -> tuple[float, TierEntry] | None:
        """The newest version held, fresh or not, for stale-if-error (reader only)."""
        return None

    def greeting(self, agent_id: str, key: str) -> GreetingAudio | None:
        return None

    def warm(self) -> bool:
        """Walk the hit path once in a fresh job process; False if there was nothing to read."""
        return False

    def put_prompt(self, agent: AgentConfig, prompt: str, loaded_at: float) -> None:
        """Mirror a loaded version for this worker's job processes (owner only)."""

    def put_greeting(self, agent_id: str, audio: GreetingAudio) -> None:
        """Mirror a synthesized greeting (owner only)."""

    def record_version(self, agent_id: str, updated_at: float, confirmed_at: float) -> None:
        """Mirror a version the change feed announced (owner only)."""

    def forget_agent(self, agent_id: str) -> None:
        """Drop a deleted agent (owner only)."""

    @property
    def on_confirmed(self) -> Callable[[float], None] | None:
        """What the refresher calls after each successful poll (the owner's heartbeat)."""
        return None

    async def load(self, agent_id: str, version: float | None, load: Load) -> PromptResult:
        """Run a load from Redis or the store for ``agent_id``."""
        return await load()


class OwnerRole(NoHostTier):
    """The worker's main process: the only writer."""

    def __init__(self, tier: HostTierOwner) -> None:
        self.tier = tier
        self._tier = tier

    def put_prompt(self, agent: AgentConfig, prompt: str, loaded_at: float) -> None:
        self._tier.put_prompt(agent, prompt, loaded_at)

    def put_greeting(self, agent_id: str, audio: GreetingAudio) -> None:
        self._tier.put_greeting(agent_id, audio)

    def record_version(self, agent_id: str, updated_at: float, confirmed_at: float) -> None:
        self._tier.record_version(agent_id, updated_at, confirmed_at)

    def forget_agent(self, agent_id: str) -> None:
        self._tier.forget_agent(agent_id)

    @property
    def on_confirmed(self) -> Callable[[float], None] | None:
        return self._tier.heartbeat

    async def load(self, agent_id: str, version: float | None, load: Load) -> PromptResult:
        """Mark the agent as loading, so a job process that missed waits for this load."""
        self._tier.mark_loading(agent_id, True)
        try:
            return await load()
        finally:
            self._tier.mark_loading(agent_id, False)


class ReaderRole(NoHostTier):
    """A job process: reads what the owner vouches for, never writes."""

    def __init__(
        self,
        tier: HostTierReader,
        *,
        trust_seconds: float,
        fresh_seconds: float,
        load_wait_seconds: float,
        clock: Callable[[], float],
    ) -> None:
        self.tier = tier
        self._tier = tier
        self._trust_seconds = trust_seconds
        self._fresh_seconds = fresh_seconds
        self._load_wait_seconds = load_wait_seconds
        self._clock = clock

    def lookup(self, agent_id: str, hint: float | None) -> PromptResult | None:
        found = self._tier.lookup(agent_id, hint, trust_seconds=self._trust_seconds, fresh_seconds=self._fresh_seconds)
        if found is None:
            return None
        return PromptResult(found.prompt, "host", found.agent.updated_at, False, found.agent)

    def newest(self, agent_id: str) -> tuple[float, TierEntry] | None:
        return self._tier.newest(agent_id)

    def greeting(self, agent_id: str, key: str) -> GreetingAudio | None:
        return self._tier.greeting(agent_id, key)

    def warm(self) -> bool:
        warmed = self._tier.warm()
        metrics.resolution_counter("host", False).inc(0)
        return warmed

    async def load(self, agent_id: str, version: float | None, load: Load) -> PromptResult:
        """Wait (up to the load timeout) for a load the owner is running to land, then read."""
        # Polled: another process's write has no event to wait on (LMDB has no notification).
        while (since := self._tier.loading_since(agent_id)) is not None and (  # noqa: ASYNC110
            self._clock() - since < self._load_wait_seconds
        ):
            await asyncio.sleep(HOST_LOAD_POLL_SECONDS)
        found = self.lookup(agent_id, version)
        return found if found is not None else await load()


def host_role(
    tier: HostTier | None,
    *,
    trust_seconds: float,
    fresh_seconds: float,
    load_wait_seconds: float,
    clock: Callable[[], float],
) -> NoHostTier:
    """The role this process plays, from how its host tier was opened."""
    if tier is None:
        return NoHostTier()
    if isinstance(tier, HostTierOwner):
        return OwnerRole(tier)
    assert isinstance(tier, HostTierReader)
    return ReaderRole(
        tier, trust_seconds=trust_seconds, fresh_seconds=fresh_seconds, load_wait_seconds=load_wait_seconds, clock=clock
    )
