"""Redis correctness under gaps, several hosts, stale hints and garbage (issue 10 items
2, 3, 4 and 8), against a real redis-server and the local Convex backend.

Every test names a way the shared tier could serve an old prompt as fresh, or stop
serving, and shows it does not."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis as redis_sync

from devtools.processes import LocalConvex
from services import AgentConfigService, ConfigUnavailableError
from services.records import cache_key
from services.store.file import local_backend_id
from tests.helpers import FakeClock, FaultyTransport, convex_service, gets, poll_versions

PRIYA = local_backend_id(0)
MARCO = local_backend_id(1)
NS = "voiceagent:"  # prompts live under voiceagent::p:<agentId>:<updatedAt>


@pytest.fixture
def raw(redis_url: str) -> Iterator[redis_sync.Redis]:
    """A plain client for writing what "something else" would write."""
    client = redis_sync.Redis.from_url(redis_url)
    yield client
    client.close()


def main_host(convex: LocalConvex, redis_url: str, **kwargs: Any) -> AgentConfigService:
    """A worker host's main-process service: refresher polled by hand, the fleet's leader
    when it is the first."""
    return convex_service(
        convex, run_refresher=True, PROMPT_CACHE_REDIS_URL=redis_url, PROMPT_REFRESH_SECONDS=3600, **kwargs
    )


def job(convex: LocalConvex, redis_url: str, **kwargs: Any) -> AgentConfigService:
    """A PROCESS-mode job's service: no refresher, only the shared tier."""
    return convex_service(convex, PROMPT_CACHE_REDIS_URL=redis_url, **kwargs)


def edit(convex: LocalConvex, agent_id: str, text: str) -> float:
    return float(convex.call("mutation", "agents:update", {"agentId": agent_id, "systemPrompt": text})["updatedAt"])


# ---------------------------------------------------------------- item 2: a gap in recording


async def test_after_a_redis_gap_the_heartbeat_does_not_vouch_for_versions_it_never_recorded(
    convex: LocalConvex, redis_url: str, raw: redis_sync.Redis
) -> None:
    clock = FakeClock()
    main = main_host(convex, redis_url, clock=clock)
    first, second = job(convex, redis_url), job(convex, redis_url)
    try:
        await poll_versions(main)
        before = await first.get_full_prompt(PRIYA)  # recorded in v:, vouched for by main
        await first.aclose()
        # Redis stops taking the main process's writes: its tier rests while its cursor
        # moves on past an edit (each poll succeeds against Convex, each record fails).
        raw.client_pause(3000, all=False)  # writes (and writing scripts) wait; reads go on
        edit(convex, PRIYA, "Gap edit: closed on Mondays.")
        await poll_versions(main)  # sees the edit, cannot record it: the tier rests
        clock.advance(60)
        await poll_versions(main)  # sees it again (overlap window), cannot record it
        raw.set(f"{NS}probe", "1")  # returns once the pause is over
        clock.advance(6)
        await poll_versions(main)  # the edit is behind the window now: nothing to record; beats
        after = await second.get_full_prompt(PRIYA)
    finally:
        await second.aclose()
        await main.aclose()
    assert "Gap edit" not in before.prompt
    assert ("Gap edit: closed on Mondays." in after.prompt, after.source) == (True, "db")


# ---------------------------------------------------------------- item 3: one heartbeat per host


async def test_a_second_host_starting_does_not_untrust_the_first_hosts_versions(
    convex: LocalConvex, redis_url: str
) -> None:
    host_a = main_host(convex, redis_url)
    first, second = job(convex, redis_url), job(convex, redis_url)
    host_b: AgentConfigService | None = None
    try:
        await poll_versions(host_a)
        await first.get_full_prompt(PRIYA)
        await first.aclose()
        host_b = main_host(convex, redis_url)  # starts its own watch later
        await poll_versions(host_b)
        reads = gets(convex)
        shared = await second.get_full_prompt(PRIYA)
    finally:
        await second.aclose()
        if host_b is not None:
            await host_b.aclose()
        await host_a.aclose()
    assert shared.source == "redis"
    assert gets(convex) == reads


async def test_trust_does_not_compare_the_recording_hosts_clock_with_the_readers(
    convex: LocalConvex, redis_url: str
) -> None:
    behind = FakeClock(time.time() - 3600)  # the watching host's clock is an hour slow
    host = main_host(convex, redis_url, clock=behind)
    first, second = job(convex, redis_url), job(convex, redis_url)
    try:
        await poll_versions(host)
        await first.get_full_prompt(MARCO)
        await first.aclose()
        shared = await second.get_full_prompt(MARCO)
    finally:
        await second.aclose()
        await host.aclose()
    assert (shared.source, shared.stale) == ("redis", False)


# ---------------------------------------------------------------- item 4: a hint is a lower bound


async def test_a_dispatch_hint_older_than_the_current_version_is_not_served_from_redis(
    convex: LocalConvex, redis_url: str
) -> None:
    main = main_host(convex, redis_url)
    first, second = job(convex, redis_url), job(convex, redis_url)
    try:
        await poll_versions(main)
        old = await first.get_full_prompt(PRIYA)  # p:PRIYA:<old> is in Redis
        await first.aclose()
        edit(convex, PRIYA, "Hint edit: now vegan.")
        await poll_versions(main)  # v:PRIYA moves on
        # The dispatch was made before the edit and names the old version.
        result = await second.get_full_prompt(PRIYA, updated_at=old.updated_at)
    finally:
        await second.aclose()
        await main.aclose()
    assert "Hint edit: now vegan." in result.prompt
    assert result.updated_at > old.updated_at


async def test_without_a_watcher_a_hinted_redis_prompt_is_not_proof_of_freshness(
    convex: LocalConvex, redis_url: str
) -> None:
    first, second = job(convex, redis_url), job(convex, redis_url)
    try:
        old = await first.get_full_prompt(MARCO)
        await first.aclose()
        edit(convex, MARCO, "Nobody watched this edit.")
        result = await second.get_full_prompt(MARCO, updated_at=old.updated_at)
    finally:
        await second.aclose()
    assert "Nobody watched this edit." in result.prompt


# ---------------------------------------------------------------- item 8: garbage in Redis


async def test_a_non_json_prompt_value_is_absent_for_that_agent_only_and_rewritten(
    convex: LocalConvex, redis_url: str, raw: redis_sync.Redis
) -> None:
    main = main_host(convex, redis_url)
    first, second, third = job(convex, redis_url), job(convex, redis_url), job(convex, redis_url)
    try:
        await poll_versions(main)
        priya = await first.get_full_prompt(PRIYA)
        await first.get_full_prompt(MARCO)
        await first.aclose()
        raw.set(f"{NS}:p:{cache_key(PRIYA, priya.updated_at)}", b"\x80\x04 not json {")
        garbled = await second.get_full_prompt(PRIYA)
        other = await second.get_full_prompt(MARCO)
        await second.aclose()
        repaired = await third.get_full_prompt(PRIYA)
    finally:
        await third.aclose()
        await main.aclose()
    assert garbled.source == "db"  # that key is absent...
    assert other.source == "redis"  # ...and the tier still serves every other agent
    assert (repaired.source, repaired.prompt) == ("redis", priya.prompt)  # overwritten by the good write


async def test_keys_of_the_wrong_type_are_absent_and_replaced_by_the_next_good_write(
    convex: LocalConvex, redis_url: str, raw: redis_sync.Redis
) -> None:
    main = main_host(convex, redis_url)
    first, second, third = job(convex, redis_url), job(convex, redis_url), job(convex, redis_url)
    try:
        await poll_versions(main)
        marco = await first.get_full_prompt(MARCO)
        await first.aclose()
        raw.delete(f"{NS}v:{PRIYA}")
        raw.lpush(f"{NS}v:{PRIYA}", "not", "a", "hash")
        raw.delete(f"{NS}:p:{cache_key(MARCO, marco.updated_at)}")
        raw.hset(f"{NS}:p:{cache_key(MARCO, marco.updated_at)}", "prompt", "wrong type")
        priya = await second.get_full_prompt(PRIYA)  # v: is a list: absent, then rewritten
        still = await second.get_full_prompt(MARCO)  # p: is a hash: absent, then rewritten
        await second.aclose()
        again = await third.get_full_prompt(PRIYA)
        marco_again = await third.get_full_prompt(MARCO)
    finally:
        await third.aclose()
        await main.aclose()
    assert (priya.source, still.source) == ("db", "db")
    assert raw.type(f"{NS}v:{PRIYA}") == b"hash"
    assert (again.source, marco_again.source) == ("redis", "redis")


async def test_a_nan_loaded_at_is_never_served(convex: LocalConvex, redis_url: str, raw: redis_sync.Redis) -> None:
    first = job(convex, redis_url)
    broken_convex = job(convex, redis_url, transport=FaultyTransport(mode="503"))
    try:
        loaded = await first.get_full_prompt(PRIYA)
        await first.aclose()
        key = f"{NS}:p:{cache_key(PRIYA, loaded.updated_at)}"
        value = raw.get(key)
        assert isinstance(value, bytes)
        raw.set(key, value.replace(b'"loadedAt": ', b'"loadedAt": "NaN", "was": '))
        # Convex is down: only a usable cached prompt could answer; NaN never ages out.
        with pytest.raises(ConfigUnavailableError):
            await broken_convex.get_full_prompt(PRIYA)
    finally:
        await broken_convex.aclose()


async def test_an_infinite_recorded_version_does_not_pin_the_agent(
    convex: LocalConvex, redis_url: str, raw: redis_sync.Redis
) -> None:
    raw.hset(f"{NS}v:{PRIYA}", mapping={"u": "inf", "w": str(time.time() * 1000)})
    main = main_host(convex, redis_url)
    first, second = job(convex, redis_url), job(convex, redis_url)
    try:
        await poll_versions(main)
        edited = edit(convex, PRIYA, "Unpinned edit.")
        await poll_versions(main)  # the bump must accept a good version over u = inf
        loaded = await first.get_full_prompt(PRIYA)
        await first.aclose()
        shared = await second.get_full_prompt(PRIYA)
    finally:
        await second.aclose()
        await main.aclose()
    recorded = raw.hget(f"{NS}v:{PRIYA}", "u")
    assert recorded is not None and float(recorded) == edited
    assert loaded.updated_at == edited
    assert (shared.source, shared.updated_at) == ("redis", edited)


@pytest.mark.parametrize("garbage", ["hash", "string without expiry"])
async def test_a_garbage_leader_lease_does_not_block_the_election(
    convex: LocalConvex, redis_url: str, raw: redis_sync.Redis, garbage: str
) -> None:
    if garbage == "hash":
        raw.hset(f"{NS}fleet:leader", "holder", "nobody")
    else:
        raw.set(f"{NS}fleet:leader", "a host that never expires")
    main = main_host(convex, redis_url)
    try:
        fleet = main.stats().fleet
        role = None if fleet is None else fleet.role
    finally:
        await main.aclose()
    assert role == "leader"
