"""RAM tier: hits without I/O, shared across job threads, bounded, expiring on read."""

from __future__ import annotations

import asyncio
import threading

import pytest
from prometheus_client import REGISTRY

from devtools.processes import LocalConvex
from prompts import build_full_prompt
from services import InvalidAgentIdError
from services.store.file import local_backend_id
from tests.conftest import demo_agents
from tests.helpers import FakeClock, convex_service, gets, poll_versions

PRIYA = local_backend_id(0)
MARCO = local_backend_id(1)
SOFIA = local_backend_id(2)


async def test_second_join_is_served_from_ram_without_a_convex_read(convex: LocalConvex) -> None:
    service = convex_service(convex)
    try:
        first = await service.get_full_prompt(PRIYA)
        second = await service.get_full_prompt(PRIYA)
    finally:
        await service.aclose()
    assert (first.source, second.source) == ("db", "ram")
    assert first.prompt == second.prompt == demo_agents()[0]["fullPrompt"]
    assert second.stale is False
    assert gets(convex) == 1


def test_jobs_on_three_threads_with_their_own_loops_share_one_ram_entry(convex: LocalConvex) -> None:
    service = convex_service(convex)
    results: list[tuple[str, str]] = []
    barrier = threading.Barrier(3)

    def job() -> None:
        async def run() -> None:
            barrier.wait()
            first = await service.get_full_prompt(PRIYA)
            second = await service.get_full_prompt(PRIYA)
            results.append((first.source, second.source))

        asyncio.run(run())  # a new loop per thread, closed at the end, as THREAD-mode jobs do

    threads = [threading.Thread(target=job) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    async def later() -> str:  # a fourth job after the first three loops are closed
        return (await service.get_full_prompt(PRIYA)).source

    fourth = asyncio.run(later())
    asyncio.run(service.aclose())
    assert gets(convex) == 1  # the three cold joins shared one load
    assert len(results) == 3
    assert all(second == "ram" for _, second in results)
    assert fourth == "ram"


async def test_entry_past_its_ttl_without_confirmation_is_read_again(convex: LocalConvex) -> None:
    clock = FakeClock()
    service = convex_service(convex, clock=clock, PROMPT_CACHE_TTL_SECONDS=600)
    try:
        await service.get_full_prompt(PRIYA)
        clock.advance(599)
        assert (await service.get_full_prompt(PRIYA)).source == "ram"
        clock.advance(2)
        expired = await service.get_full_prompt(PRIYA)
    finally:
        await service.aclose()
    assert expired.source == "db"
    assert expired.stale is False
    assert gets(convex) == 2


async def test_refresher_polls_keep_a_hot_entry_confirmed_past_its_ttl(convex: LocalConvex) -> None:
    clock = FakeClock()
    service = convex_service(convex, clock=clock, run_refresher=True, PROMPT_CACHE_TTL_SECONDS=600)
    try:
        await service.get_full_prompt(PRIYA)
        clock.advance(500)
        await poll_versions(service)  # no change: confirms the version at "now"
        clock.advance(500)
        result = await service.get_full_prompt(PRIYA)
    finally:
        await service.aclose()
    assert result.source == "ram"
    assert gets(convex) == 1


async def test_ram_tier_keeps_at_most_max_entries_evicting_the_least_recently_used(convex: LocalConvex) -> None:
    service = convex_service(convex, PROMPT_CACHE_MAX_ENTRIES=2)
    try:
        await service.get_full_prompt(PRIYA)
        await service.get_full_prompt(MARCO)
        await service.get_full_prompt(PRIYA)  # Priya is now the most recently used
        await service.get_full_prompt(SOFIA)  # evicts Marco
        assert service.stats().ram_entries == 2
        assert REGISTRY.get_sample_value("agent_prompt_cache_entries", {"tier": "ram"}) == 2  # also a gauge
        prompt_bytes = REGISTRY.get_sample_value("agent_prompt_cache_bytes", {"tier": "ram"})
        assert prompt_bytes == service.stats().ram_prompt_bytes > 0
        assert (await service.get_full_prompt(PRIYA)).source == "ram"
        assert (await service.get_full_prompt(MARCO)).source == "db"
    finally:
        await service.aclose()
    assert gets(convex) == 4


async def test_five_hundred_concurrent_cold_joins_cause_one_convex_read(convex_server: LocalConvex) -> None:
    from devtools.processes import start_local_convex
    from tests.conftest import DEMO_SEED

    slow = start_local_convex(seed=DEMO_SEED, latency_ms=100)
    service = convex_service(slow)
    try:
        results = await asyncio.gather(*(service.get_full_prompt(MARCO) for _ in range(500)))
    finally:
        await service.aclose()
        stats = slow.stats()
        slow.stop()
    assert stats["byPath"] == {"agents:get": 1}
    assert {r.prompt for r in results} == {demo_agents()[1]["fullPrompt"]}


def test_concurrent_cold_joins_from_many_threads_cause_one_read(convex: LocalConvex) -> None:
    service = convex_service(convex)

    def job() -> str:
        return asyncio.run(service.get_full_prompt(SOFIA)).source

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(16) as pool:
        sources = list(pool.map(lambda _: job(), range(64)))
    asyncio.run(service.aclose())
    assert gets(convex) == 1
    assert set(sources) <= {"db", "ram"}


async def test_dispatch_hint_newer_than_the_cache_forces_a_read_of_the_new_version(convex: LocalConvex) -> None:
    service = convex_service(convex)
    try:
        before = await service.get_full_prompt(PRIYA)
        updated = convex.call("mutation", "agents:update", {"agentId": PRIYA, "systemPrompt": "Closed for holidays."})
        after = await service.get_full_prompt(PRIYA, updated_at=updated["updatedAt"])
        again = await service.get_full_prompt(PRIYA)
    finally:
        await service.aclose()
    assert before.source == "db"
    assert after.source == "db"
    assert after.updated_at == updated["updatedAt"]
    assert "Closed for holidays." in after.prompt
    assert again.source == "ram" and again.prompt == after.prompt


@pytest.mark.parametrize("bad_id", ["", "../etc/passwd", "Priya", "a:b", "x" * 65, "short", "ABCDEFGHIJKLMNOP"])
async def test_malformed_agent_ids_are_refused_before_any_io(convex: LocalConvex, bad_id: str) -> None:
    service = convex_service(convex)
    try:
        with pytest.raises(InvalidAgentIdError) as info:
            await service.get_full_prompt(bad_id)
    finally:
        await service.aclose()
    assert "agent id" in str(info.value)
    assert convex.reads() == 0


async def test_clear_prompt_cache_forgets_one_agent(convex: LocalConvex) -> None:
    service = convex_service(convex)
    try:
        await service.get_full_prompt(PRIYA)
        await service.get_full_prompt(MARCO)
        service.clear_prompt_cache(PRIYA)
        assert (await service.get_full_prompt(PRIYA)).source == "db"
        assert (await service.get_full_prompt(MARCO)).source == "ram"
        service.clear_all_prompt_cache()
        assert (await service.get_full_prompt(MARCO)).source == "db"
    finally:
        await service.aclose()


async def test_agent_config_comes_from_the_same_entry_as_the_prompt(convex: LocalConvex) -> None:
    service = convex_service(convex)
    try:
        prompt = await service.get_full_prompt(MARCO)
        config = await service.get_agent_config(MARCO)
    finally:
        await service.aclose()
    assert config.name == "Marco"
    assert config.config["domain"] == "restaurant"
    assert config.updated_at == prompt.updated_at
    assert gets(convex) == 1
    assert prompt.prompt == build_full_prompt(demo_agents()[1])
