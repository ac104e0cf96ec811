"""Legacy agents (no fullPrompt): built at once, written back once, never over an edit."""

from __future__ import annotations

import asyncio
import threading

from prometheus_client import REGISTRY

from devtools.processes import LocalConvex
from prompts import build_full_prompt
from services.store.file import local_backend_id
from tests.conftest import demo_agents
from tests.helpers import FaultyTransport, convex_service, gets

LARRY = local_backend_id(3)  # the demo seed's legacy agent


async def test_legacy_agent_is_built_returned_and_written_back_once_for_many_joins(convex: LocalConvex) -> None:
    service = convex_service(convex)
    try:
        results = await asyncio.gather(*(service.get_full_prompt(LARRY) for _ in range(50)))
        later = await service.get_full_prompt(LARRY)
    finally:
        await service.aclose()  # flushes the write-back
    expected = build_full_prompt(demo_agents()[3])
    assert {r.source for r in results} == {"build"}
    assert {r.prompt for r in results} == {expected}
    assert later.source == "ram"
    stats = convex.stats()["byPath"]
    assert stats == {"agents:get": 1, "agents:savePrompt": 1}
    stored = convex.call("query", "agents:get", {"agentId": LARRY})
    assert stored["fullPrompt"] == expected
    assert stored["updatedAt"] == demo_agents()[3]["updatedAt"]  # the cache key did not move


async def test_a_write_back_that_loses_the_race_to_an_edit_keeps_the_edit(convex: LocalConvex) -> None:
    release = threading.Event()
    transport = FaultyTransport(hold={"agents:savePrompt": release})
    service = convex_service(convex, transport=transport)
    try:
        built = await service.get_full_prompt(LARRY)
        assert built.source == "build"
        # While the write-back is held in flight, somebody edits the agent.
        convex.call("mutation", "agents:update", {"agentId": LARRY, "systemPrompt": "Edited during the write-back."})
        release.set()
    finally:
        await service.aclose()
    stored = convex.call("query", "agents:get", {"agentId": LARRY})
    assert "Edited during the write-back." in stored["fullPrompt"]
    assert stored["fullPrompt"] != built.prompt
    assert convex.stats()["byPath"]["agents:savePrompt"] == 1


async def test_a_failed_write_back_does_not_fail_the_join(convex: LocalConvex) -> None:
    # savePrompt fails from the start: the joins must not see it, the failure is counted
    # once the background write-back has run (aclose flushes it), and nothing is written.
    failed = REGISTRY.get_sample_value("agent_prompt_writebacks_total", {"result": "failed"}) or 0.0
    transport = FaultyTransport(fail_paths={"agents:savePrompt"})
    service = convex_service(convex, transport=transport)
    try:
        first = await service.get_full_prompt(LARRY)
        second = await service.get_full_prompt(LARRY)
    finally:
        await service.aclose()
    assert (first.source, second.source) == ("build", "ram")
    assert second.prompt == first.prompt
    assert "agents:savePrompt" in transport.seen
    assert REGISTRY.get_sample_value("agent_prompt_writebacks_total", {"result": "failed"}) == failed + 1
    assert gets(convex) == 1
    assert "fullPrompt" not in convex.call("query", "agents:get", {"agentId": LARRY})
