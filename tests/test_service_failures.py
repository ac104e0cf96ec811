"""Convex failing in every way we know: stale-if-error for agents seen before, a clear
typed error within the deadline for agents never seen, nothing malformed cached."""

from __future__ import annotations

import time

import pytest

from devtools.processes import LocalConvex, start_local_convex
from services import AgentNotFoundError, ConfigUnavailableError
from services.store.file import local_backend_id
from tests.conftest import DEMO_SEED
from tests.helpers import FakeClock, FaultyTransport, convex_service, gets, settings_for

PRIYA = local_backend_id(0)
MARCO = local_backend_id(1)
UNKNOWN = "00000000000000000000099999agents"


@pytest.mark.parametrize("mode", ["503", "garbage", "refuse", "hang"])
async def test_a_seen_agent_is_served_stale_when_convex_fails(convex: LocalConvex, mode: str) -> None:
    clock = FakeClock()
    transport = FaultyTransport()
    service = convex_service(convex, transport=transport, clock=clock, CONVEX_TIMEOUT_SECONDS=0.2)
    try:
        fresh = await service.get_full_prompt(PRIYA)
        transport.mode = mode
        clock.advance(601)  # past the TTL: the service must ask Convex again
        stale = await service.get_full_prompt(PRIYA)
        # Convex just failed: the next join is answered from RAM without asking it again.
        requests_before = len(transport.seen)
        again = await service.get_full_prompt(PRIYA)
        requests_after = len(transport.seen)
    finally:
        transport.mode = "ok"
        await service.aclose()
    assert (stale.source, stale.stale, stale.prompt) == ("ram", True, fresh.prompt)
    assert (again.source, again.stale) == ("ram", True)
    assert requests_after == requests_before  # no second timeout paid: the store is resting


async def test_stale_is_served_only_within_the_stale_if_error_window(convex: LocalConvex) -> None:
    clock = FakeClock()
    transport = FaultyTransport()
    service = convex_service(convex, transport=transport, clock=clock, PROMPT_STALE_IF_ERROR_SECONDS=3600)
    try:
        await service.get_full_prompt(PRIYA)
        transport.mode = "503"
        clock.advance(3601)
        with pytest.raises(ConfigUnavailableError) as info:
            await service.get_full_prompt(PRIYA)
    finally:
        transport.mode = "ok"
        await service.aclose()
    assert PRIYA in str(info.value)
    assert "503" in str(info.value)


async def test_a_dead_convex_on_a_closed_port_still_serves_what_was_seen() -> None:
    server = start_local_convex(seed=DEMO_SEED)
    clock = FakeClock()
    service = convex_service(server, clock=clock, CONVEX_TIMEOUT_SECONDS=0.3)
    try:
        fresh = await service.get_full_prompt(MARCO)
        server.stop()  # the port is now closed
        clock.advance(700)
        stale = await service.get_full_prompt(MARCO)
        with pytest.raises(ConfigUnavailableError):
            await service.get_full_prompt(PRIYA)  # never seen
    finally:
        await service.aclose()
        server.stop()
    assert stale.stale and stale.prompt == fresh.prompt


async def test_an_agent_never_seen_fails_within_three_timeouts_when_convex_hangs(hanging_port: int) -> None:
    from services import AgentConfigService
    from services.store.factory import default_store_factory

    settings = settings_for(
        None,
        CONVEX_URL=f"http://127.0.0.1:{hanging_port}",
        CONVEX_DEPLOY_KEY="k",
        CONVEX_TIMEOUT_SECONDS=0.5,
    )
    service = AgentConfigService(settings, store_factory=default_store_factory(settings), run_refresher=False)
    try:
        started = time.monotonic()
        with pytest.raises(ConfigUnavailableError) as info:
            await service.get_full_prompt(PRIYA)
        elapsed = time.monotonic() - started
    finally:
        await service.aclose()
    assert elapsed <= 3 * 0.5 + 1.0  # the documented bound (3 x timeout), plus slack for a busy machine
    assert PRIYA in str(info.value)


@pytest.mark.parametrize(("mode", "cause"), [("garbage", "not JSON"), ("malformed", "malformed")])
async def test_garbage_from_convex_is_never_cached(convex: LocalConvex, mode: str, cause: str) -> None:
    transport = FaultyTransport(mode=mode)
    service = convex_service(convex, transport=transport)
    try:
        with pytest.raises(ConfigUnavailableError) as info:
            await service.get_full_prompt(MARCO)
        transport.mode = "ok"
        result = await service.get_full_prompt(MARCO)
    finally:
        await service.aclose()
    assert cause in str(info.value)
    assert result.source == "db"
    assert "You are Marco" in result.prompt
    assert gets(convex) == 1  # the faulty answer never reached the backend's counters


async def test_unknown_agents_are_cached_negatively_for_the_not_found_ttl(convex: LocalConvex) -> None:
    clock = FakeClock()
    service = convex_service(convex, clock=clock, PROMPT_NOT_FOUND_TTL_SECONDS=30)
    try:
        with pytest.raises(AgentNotFoundError):
            await service.get_full_prompt(UNKNOWN)
        assert service.known_missing(UNKNOWN)
        with pytest.raises(AgentNotFoundError) as info:
            await service.get_full_prompt(UNKNOWN)
        assert gets(convex) == 1
        clock.advance(31)
        assert not service.known_missing(UNKNOWN)
        with pytest.raises(AgentNotFoundError):
            await service.get_full_prompt(UNKNOWN)
    finally:
        await service.aclose()
    assert UNKNOWN in str(info.value)
    assert gets(convex) == 2
