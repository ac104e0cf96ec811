"""One contract, every tier: RAM, the host tier (its owner writes, the same environment
reads as a job process would) and Redis keep it alike.

A tier returns exactly the version asked for, byte for byte what was put, forgets an
agent when told, and holds a version's greeting audio under the key that names it.
Which version is current and whether it is fresh is the service's rule, not a tier's:
none of it is tested here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from services.records import AgentConfig
from services.tiers.entry import TierEntry
from services.tiers.greeting import GreetingAudio, GreetingRam, greeting_key
from services.tiers.host_owner import HostTierOwner
from services.tiers.protocols import LocalTier, Mirror, SharedTier
from services.tiers.ram import RamTier
from services.tiers.redis import RedisTier


@dataclass
class Tier:
    """The tier under test, seen through the calls the service makes on it."""

    put: Callable[[AgentConfig, str, float], Awaitable[None]]
    get: Callable[[str, float], Awaitable[TierEntry | None]]
    forget: Callable[[str], Awaitable[None]]
    put_greeting: Callable[[str, GreetingAudio], Awaitable[None]]
    get_greeting: Callable[[str, str], Awaitable[GreetingAudio | None]]


def ram_tier() -> Tier:
    ram, greetings = RamTier(100), GreetingRam()
    local: LocalTier = ram  # the protocols are checked by mypy here
    assert local is ram

    async def put(agent: AgentConfig, prompt: str, loaded_at: float) -> None:
        await ram.put(agent, prompt, loaded_at)

    async def get(agent_id: str, version: float) -> TierEntry | None:
        return ram.get(agent_id, version)

    async def forget(agent_id: str) -> None:
        ram.discard(agent_id)
        greetings.discard(agent_id)

    async def put_greeting(agent_id: str, audio: GreetingAudio) -> None:
        greetings.put(agent_id, audio)

    async def get_greeting(agent_id: str, key: str) -> GreetingAudio | None:
        return greetings.get(agent_id, key)

    return Tier(put, get, forget, put_greeting, get_greeting)


def host_tier(owner: HostTierOwner) -> Tier:
    mirror: Mirror = owner
    assert mirror is owner

    async def put(agent: AgentConfig, prompt: str, loaded_at: float) -> None:
        owner.put_prompt(agent, prompt, loaded_at)

    async def get(agent_id: str, version: float) -> TierEntry | None:
        found = owner.lookup(agent_id, version, trust_seconds=60, fresh_seconds=3600)
        return found if found is not None and found.agent.updated_at == version else None

    async def forget(agent_id: str) -> None:
        owner.forget_agent(agent_id)

    async def put_greeting(agent_id: str, audio: GreetingAudio) -> None:
        owner.put_greeting(agent_id, audio)

    async def get_greeting(agent_id: str, key: str) -> GreetingAudio | None:
        return owner.greeting(agent_id, key)

    return Tier(put, get, forget, put_greeting, get_greeting)


def redis_tier(redis: RedisTier, clock: list[float]) -> Tier:
    shared: SharedTier = redis
    assert shared is redis

    async def put(agent: AgentConfig, prompt: str, loaded_at: float) -> None:
        clock[0] = loaded_at  # Redis stamps loadedAt with its own clock when it writes
        await redis.put_prompt(agent.agent_id, agent.updated_at, prompt, agent)

    async def get(agent_id: str, version: float) -> TierEntry | None:
        return await redis.get_prompt(agent_id, version)

    async def forget(agent_id: str) -> None:
        await redis.forget_agent(agent_id, [1.0, 2.0])

    return Tier(put, get, forget, redis.put_greeting, redis.get_greeting)


@pytest.fixture(params=["ram", "host", "redis"])
async def tier(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Tier]:
    if request.param == "ram":
        yield ram_tier()
    elif request.param == "host":
        owner = HostTierOwner.open(tmp_path, max_entries=100)
        try:
            yield host_tier(owner)
        finally:
            owner.close()
    else:
        redis_url: str = request.getfixturevalue("redis_url")
        clock = [0.0]
        redis = RedisTier(redis_url, prompt_ttl_seconds=60, trust_seconds=10, clock=lambda: clock[0])
        try:
            yield redis_tier(redis, clock)
        finally:
            await redis.aclose()


def agent(agent_id: str, version: float) -> AgentConfig:
    return AgentConfig(agent_id, "org", f"Agent {agent_id}", {"voice": "alloy", "greeting": "héllo ✓"}, version)


def sound(agent_id: str, version: float, size: int = 4800) -> GreetingAudio:
    key = greeting_key(agent_id, version, tts_model="gpt-4o-mini-tts", voice="alloy")
    return GreetingAudio(key, version, 24000, bytes([int(version) % 251]) * size)


async def test_what_is_put_is_read_back_exactly(tier: Tier) -> None:
    prompt = "Vous êtes Priya ✓ " + "x" * 50_000
    await tier.put(agent("a", 1.0), prompt, 1_700_000_000.5)
    found = await tier.get("a", 1.0)
    assert found is not None
    assert (found.prompt, found.agent, found.loaded_at) == (prompt, agent("a", 1.0), 1_700_000_000.5)


async def test_a_version_not_put_is_a_miss(tier: Tier) -> None:
    await tier.put(agent("a", 1.0), "one", 1.0)
    assert await tier.get("a", 2.0) is None
    assert await tier.get("b", 1.0) is None


async def test_a_forgotten_agent_is_gone_and_the_others_stay(tier: Tier) -> None:
    await tier.put(agent("a", 1.0), "doomed", 1.0)
    await tier.put(agent("b", 1.0), "stays", 1.0)
    await tier.put_greeting("a", sound("a", 1.0))
    await tier.forget("a")
    assert await tier.get("a", 1.0) is None
    assert await tier.get_greeting("a", sound("a", 1.0).key) is None
    kept = await tier.get("b", 1.0)
    assert kept is not None and kept.prompt == "stays"


@pytest.mark.parametrize("size", [0, 1, 4800])
async def test_a_greeting_is_held_under_the_key_that_names_it(tier: Tier, size: int) -> None:
    audio = sound("a", 1.0, size)
    await tier.put_greeting("a", audio)
    assert await tier.get_greeting("a", audio.key) == audio
    assert await tier.get_greeting("a", sound("a", 2.0).key) is None  # another version's sound
    await tier.put_greeting("a", sound("a", 2.0))  # one greeting per agent: the newer replaces it
    assert await tier.get_greeting("a", audio.key) is None
    assert await tier.get_greeting("a", sound("a", 2.0).key) == sound("a", 2.0)
