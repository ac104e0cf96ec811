"""The Redis tier: what lets a fresh PROCESS-mode job skip Convex, and never what fails it."""

from __future__ import annotations

from devtools.processes import LocalConvex, free_port
from services.store.file import local_backend_id
from services.store.protocol import AgentVersion
from services.tiers.redis import RedisTier
from tests.helpers import FakeClock, FaultyTransport, convex_service, gets, poll_versions

PRIYA = local_backend_id(0)
MARCO = local_backend_id(1)


async def test_a_fresh_job_process_resolves_from_redis_without_a_convex_read(
    convex: LocalConvex, redis_url: str
) -> None:
    main = convex_service(convex, run_refresher=True, PROMPT_CACHE_REDIS_URL=redis_url, PROMPT_REFRESH_SECONDS=3600)
    first_job = convex_service(convex, PROMPT_CACHE_REDIS_URL=redis_url)
    second_job = convex_service(convex, PROMPT_CACHE_REDIS_URL=redis_url)
    try:
        await poll_versions(main)  # the worker's main process vouches for the shared index
        loaded = await first_job.get_full_prompt(PRIYA)
        await first_job.aclose()  # the job ends; its write to Redis is flushed
        reads_before = gets(convex)
        shared = await second_job.get_full_prompt(PRIYA)
    finally:
        await second_job.aclose()
        await main.aclose()
    assert loaded.source == "db"
    assert (shared.source, shared.stale, shared.prompt) == ("redis", False, loaded.prompt)
    assert gets(convex) == reads_before == 1


async def test_without_a_live_refresher_the_shared_version_is_not_trusted(convex: LocalConvex, redis_url: str) -> None:
    first_job = convex_service(convex, PROMPT_CACHE_REDIS_URL=redis_url)
    second_job = convex_service(convex, PROMPT_CACHE_REDIS_URL=redis_url)
    try:
        await first_job.get_full_prompt(MARCO)
        await first_job.aclose()
        result = await second_job.get_full_prompt(MARCO)
    finally:
        await second_job.aclose()
    # Nobody watched the change feed, so Redis cannot say Marco is still at that version.
    assert result.source == "db"
    assert gets(convex) == 2


async def test_an_edit_seen_by_the_main_refresher_reaches_the_next_job(convex: LocalConvex, redis_url: str) -> None:
    main = convex_service(convex, run_refresher=True, PROMPT_CACHE_REDIS_URL=redis_url, PROMPT_REFRESH_SECONDS=3600)
    first_job = convex_service(convex, PROMPT_CACHE_REDIS_URL=redis_url)
    second_job = convex_service(convex, PROMPT_CACHE_REDIS_URL=redis_url)
    try:
        await poll_versions(main)
        before = await first_job.get_full_prompt(PRIYA)
        await first_job.aclose()
        convex.call("mutation", "agents:update", {"agentId": PRIYA, "systemPrompt": "Now open on Sundays."})
        await poll_versions(main)
        after = await second_job.get_full_prompt(PRIYA)
    finally:
        await second_job.aclose()
        await main.aclose()
    assert "Now open on Sundays." not in before.prompt
    assert "Now open on Sundays." in after.prompt
    assert after.updated_at > before.updated_at


async def test_redis_down_degrades_to_convex_and_never_fails_a_join(convex: LocalConvex) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    main = convex_service(convex, run_refresher=True, PROMPT_CACHE_REDIS_URL=dead, PROMPT_REFRESH_SECONDS=3600)
    job = convex_service(convex, PROMPT_CACHE_REDIS_URL=dead)
    try:
        await poll_versions(main)
        first = await job.get_full_prompt(MARCO)
        second = await job.get_full_prompt(MARCO)
    finally:
        await job.aclose()
        await main.aclose()
    assert (first.source, second.source) == ("db", "ram")


async def test_with_convex_down_a_fresh_job_serves_the_shared_prompt_as_stale(
    convex: LocalConvex, redis_url: str
) -> None:
    clock = FakeClock()
    first_job = convex_service(convex, PROMPT_CACHE_REDIS_URL=redis_url, clock=clock)
    transport = FaultyTransport(mode="503")
    second_job = convex_service(convex, PROMPT_CACHE_REDIS_URL=redis_url, transport=transport, clock=clock)
    try:
        loaded = await first_job.get_full_prompt(PRIYA)
        await first_job.aclose()
        clock.advance(700)
        stale = await second_job.get_full_prompt(PRIYA)
    finally:
        await second_job.aclose()
    assert (stale.source, stale.stale, stale.prompt) == ("redis", True, loaded.prompt)


async def test_the_tier_runs_its_scripts_by_sha_and_reloads_them_after_a_script_flush(redis_url: str) -> None:
    """A restarted (or new) server knows none of the scripts: the tier loads them again
    instead of reporting Redis as unavailable."""
    tier = RedisTier(redis_url, prompt_ttl_seconds=60, trust_seconds=10)
    try:
        await tier.client.script_flush()
        assert await tier.record_versions([AgentVersion(PRIYA, 1.0)])  # pipelined EVALSHA
        assert await tier.heartbeat("host-a", new_watch=True)  # one EVALSHA
        await tier.client.script_flush()
        assert await tier.record_versions([AgentVersion(PRIYA, 2.0)])
        found = await tier.get_version(PRIYA)
        assert found is not None and found.updated_at == 2.0
        assert tier.available
        info = await tier.client.info("commandstats")
        assert "cmdstat_eval" not in info  # never the whole script on the wire
    finally:
        await tier.aclose()
