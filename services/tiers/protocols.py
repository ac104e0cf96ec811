"""The three shapes a tier takes, as the service uses them.

- :class:`LocalTier`: this process's memory. Reads are synchronous: the RAM hit path has
  no awaits (about 14 us a join), so nothing on it may suspend.
- :class:`SharedTier`: another process's memory (Redis, shared by the fleet). Every call
  is I/O, so async, and any failure answers "nothing" rather than failing a join.
- :class:`Mirror`: where this process writes what it loads for its job processes (the
  host tier's owner; a no-op elsewhere, see ``host_role.py``).

Freshness is not a tier's business: every tier returns the exact version asked for, and
the service's one rule (``services/freshness/rule.py``) decides whether it may serve it.
The contract every tier keeps is tested once, against each (tests/test_tier_contract.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from services.records import AgentConfig
from services.store.protocol import AgentVersion
from services.tiers.entry import TierEntry
from services.tiers.greeting import GreetingAudio
from services.tiers.redis import SharedVersion


class LocalTier(Protocol):
    def get(self, agent_id: str, version: float) -> TierEntry | None:
        """The entry for exactly this version; no awaits."""

    def held_version(self, agent_id: str) -> float | None: ...

    def peek_held(self, agent_id: str) -> TierEntry | None:
        """The agent's held entry, any version, without counting a use."""

    async def put(self, agent: AgentConfig, prompt: str, loaded_at: float) -> bool:
        """Hold this version; False if a newer one is held (never rolls back)."""

    def discard(self, agent_id: str) -> float | None: ...

    def clear(self) -> None: ...


class SharedTier(Protocol):
    async def get_prompt(self, agent_id: str, updated_at: float) -> TierEntry | None: ...

    async def put_prompt(self, agent_id: str, updated_at: float, prompt: str, agent: AgentConfig) -> None: ...

    async def record_versions(self, versions: Iterable[AgentVersion]) -> bool: ...

    async def get_version(self, agent_id: str, *, trusted_only: bool = True) -> SharedVersion | None:
        """The agent's current version if a live watcher vouches for it."""

    async def get_greeting(self, agent_id: str, key: str) -> GreetingAudio | None: ...

    async def put_greeting(self, agent_id: str, audio: GreetingAudio) -> None: ...

    async def forget_agent(self, agent_id: str, versions: Iterable[float] = ()) -> None: ...


class Mirror(Protocol):
    def put_prompt(self, agent: AgentConfig, prompt: str, loaded_at: float) -> None: ...

    def put_greeting(self, agent_id: str, audio: GreetingAudio) -> None: ...

    def record_version(self, agent_id: str, updated_at: float, confirmed_at: float) -> None: ...

    def forget_agent(self, agent_id: str) -> None: ...
