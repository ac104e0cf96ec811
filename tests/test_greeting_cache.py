"""Greeting audio per agent version: bounded in RAM, shared through the host tier and
Redis, dropped with its version (edit, delete)."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.records import AgentConfig
from services.tiers.greeting import MAX_GREETING_BYTES, GreetingAudio, GreetingRam, greeting_key
from services.tiers.host_owner import HostTierOwner
from services.tiers.redis import RedisTier

AGENT = "a" * 32
OTHER = "b" * 32


def audio(agent_id: str, version: float, size: int = 4800) -> GreetingAudio:
    key = greeting_key(agent_id, version, tts_model="gpt-4o-mini-tts", voice="alloy")
    return GreetingAudio(key, version, 24000, bytes([int(version) % 251]) * size)


def test_the_key_names_the_version_the_voice_and_the_speech_model() -> None:
    keys = {
        greeting_key(AGENT, 1.0, tts_model="m", voice="alloy"),
        greeting_key(AGENT, 2.0, tts_model="m", voice="alloy"),
        greeting_key(AGENT, 1.0, tts_model="m", voice="verse"),
        greeting_key(AGENT, 1.0, tts_model="n", voice="alloy"),
    }
    assert len(keys) == 4


def test_ram_holds_one_version_per_agent_newest_wins_and_is_bounded_in_bytes() -> None:
    ram = GreetingRam(max_bytes=10_000)
    assert ram.put(AGENT, audio(AGENT, 2.0))
    assert not ram.put(AGENT, audio(AGENT, 1.0))  # never replaced by an older version
    assert ram.get(AGENT, audio(AGENT, 1.0).key) is None
    assert ram.get(AGENT, audio(AGENT, 2.0).key) is not None
    assert ram.put(OTHER, audio(OTHER, 1.0, size=6000))  # evicts the least recently used
    assert ram.get(AGENT, audio(AGENT, 2.0).key) is None
    assert ram.audio_bytes == 6000
    assert not GreetingRam().put(AGENT, audio(AGENT, 3.0, size=MAX_GREETING_BYTES + 2))


def test_ram_drops_a_version_an_edit_superseded_but_not_a_newer_one() -> None:
    ram = GreetingRam()
    ram.put(AGENT, audio(AGENT, 2.0))
    ram.discard(AGENT, older_than=2.0)
    assert len(ram) == 1
    ram.discard(AGENT, older_than=3.0)
    assert len(ram) == 0


def test_the_host_tier_shares_a_greeting_with_job_processes_and_drops_it_with_the_agent(tmp_path: Path) -> None:
    owner = HostTierOwner.open(tmp_path, max_entries=10)
    reader = owner  # one LMDB environment per process: the owner reads as a job process would
    try:
        sound = audio(AGENT, 1.0)
        owner.put_greeting(AGENT, sound)
        found = reader.greeting(AGENT, sound.key)
        assert found is not None and found.pcm == sound.pcm and found.sample_rate == 24000
        assert reader.greeting(AGENT, audio(AGENT, 2.0).key) is None

        agent = AgentConfig(AGENT, "org", "n", {}, 1.0)
        owner.put_prompt(agent, "p", 1.0)
        owner.put_prompt(AgentConfig(AGENT, "org", "n", {}, 2.0), "p2", 2.0)  # an edit
        assert reader.greeting(AGENT, sound.key) is None

        owner.put_greeting(AGENT, audio(AGENT, 2.0))
        owner.forget_agent(AGENT)  # a delete
        assert reader.greeting(AGENT, audio(AGENT, 2.0).key) is None
    finally:
        owner.close()


async def test_redis_shares_a_greeting_between_hosts_and_forgets_it_with_the_agent(redis_url: str) -> None:
    host_a = RedisTier(redis_url, prompt_ttl_seconds=60, trust_seconds=10)
    host_b = RedisTier(redis_url, prompt_ttl_seconds=60, trust_seconds=10)
    try:
        sound = audio(AGENT, 1.0)
        await host_a.put_greeting(AGENT, sound)
        found = await host_b.get_greeting(AGENT, sound.key)
        assert found is not None and found.pcm == sound.pcm
        assert await host_b.get_greeting(AGENT, audio(AGENT, 2.0).key) is None
        await host_b.forget_agent(AGENT)
        assert await host_a.get_greeting(AGENT, sound.key) is None
    finally:
        await host_a.aclose()
        await host_b.aclose()


async def test_a_garbage_greeting_in_redis_is_a_miss_not_an_error(redis_url: str) -> None:
    tier = RedisTier(redis_url, prompt_ttl_seconds=60, trust_seconds=10)
    try:
        await tier.client.set(tier.key(f"g:{AGENT}"), b"not a greeting")
        assert await tier.get_greeting(AGENT, audio(AGENT, 1.0).key) is None
        assert tier.available  # a bad value is not an outage
    finally:
        await tier.aclose()


@pytest.mark.parametrize("size", [0, 1])
def test_empty_or_odd_audio_still_round_trips_through_the_host_tier(tmp_path: Path, size: int) -> None:
    owner = HostTierOwner.open(tmp_path, max_entries=10)
    try:
        sound = audio(AGENT, 1.0, size=size)
        owner.put_greeting(AGENT, sound)
        found = owner.greeting(AGENT, sound.key)
        assert found is not None and found.pcm == sound.pcm
    finally:
        owner.close()
