"""Freshness under odd stamps and races: a future-stamped row must not blind the
refresher to later edits, and a negative answer that raced a create must not reject the
new agent once the change feed has shown it."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.processes import LocalConvex, ServiceStartError, start_local_convex
from services import AgentNotFoundError
from services.store.file import local_backend_id
from tests.conftest import demo_agents, unavailable
from tests.helpers import FaultyTransport, convex_service, poll_versions

PRIYA = local_backend_id(0)
FUTURE = local_backend_id(len(demo_agents()))  # seeded after the demo agents
DAY_MS = 86_400_000.0


@pytest.fixture(scope="module")
def future_convex(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalConvex]:
    """A deployment holding one agent stamped a day ahead (an import with a bad clock)."""
    docs = demo_agents()
    stamp = float(int(time.time() * 1000 + DAY_MS))
    futura = {key: value for key, value in docs[1].items() if key not in ("fullPrompt", "promptVersion")}
    docs.append({**futura, "name": "Futura", "createdAt": stamp, "updatedAt": stamp})
    seed = Path(tmp_path_factory.mktemp("future")) / "agents.json"
    seed.write_text(json.dumps({"agents": docs}))
    try:
        server = start_local_convex(seed=seed)
    except ServiceStartError as exc:
        unavailable(str(exc))
        raise
    yield server
    server.stop()


async def test_a_future_stamped_row_does_not_hide_later_edits(future_convex: LocalConvex) -> None:
    convex = future_convex
    convex.reset(data=True)
    service = convex_service(convex, run_refresher=True, PROMPT_REFRESH_SECONDS=3600)
    try:
        await service.get_full_prompt(PRIYA)
        first = await poll_versions(service)  # reads the future row
        convex.call("mutation", "agents:update", {"agentId": PRIYA, "systemPrompt": "Closed on Sundays."})
        await poll_versions(service)
        edited = await service.get_full_prompt(PRIYA)
    finally:
        await service.aclose()
    assert [row.agent_id for row in first] == [FUTURE]
    assert "Closed on Sundays." in edited.prompt


async def test_a_future_stamped_version_is_served_and_its_edits_are_seen(future_convex: LocalConvex) -> None:
    convex = future_convex
    convex.reset(data=True)
    service = convex_service(convex, run_refresher=True, PROMPT_REFRESH_SECONDS=3600)
    try:
        await poll_versions(service)
        before = await service.get_full_prompt(FUTURE)
        updated = convex.call("mutation", "agents:update", {"agentId": FUTURE, "name": "Futura Two"})
        await poll_versions(service)
        after = await service.get_full_prompt(FUTURE)
    finally:
        await service.aclose()
    assert "You are Futura" in before.prompt and before.updated_at > time.time() * 1000
    assert after.updated_at == updated["updatedAt"]
    assert "You are Futura Two" in after.prompt
    assert after.source == "ram"  # the refresher reloaded the held agent


async def test_a_not_found_answer_that_raced_a_create_does_not_reject_the_new_agent(convex: LocalConvex) -> None:
    new_id = local_backend_id(len(demo_agents()))  # the id the backend gives the next agent
    transport = FaultyTransport()
    release = threading.Event()
    transport.hold_answer["agents:get"] = release
    service = convex_service(convex, transport=transport, run_refresher=True, PROMPT_REFRESH_SECONDS=3600)
    try:
        early = asyncio.create_task(service.get_full_prompt(new_id))
        assert await asyncio.to_thread(transport.answer_held.wait, 30)  # read "no such agent", answer held
        created = convex.call(
            "mutation",
            "agents:create",
            {"organizationId": "org_new", "name": "Nova", "systemPrompt": "Greet.", "config": _config()},
        )
        await poll_versions(service)  # the feed shows the new agent
        del transport.hold_answer["agents:get"]
        release.set()
        await asyncio.gather(early, return_exceptions=True)
        result = await service.get_full_prompt(new_id)
    finally:
        release.set()
        await service.aclose()
    assert created == new_id
    assert "You are Nova" in result.prompt


async def test_a_negative_entry_is_cleared_when_the_feed_shows_the_agent(convex: LocalConvex) -> None:
    new_id = local_backend_id(len(demo_agents()))
    service = convex_service(convex, run_refresher=True, PROMPT_REFRESH_SECONDS=3600)
    try:
        with pytest.raises(AgentNotFoundError):
            await service.get_full_prompt(new_id)
        convex.call(
            "mutation",
            "agents:create",
            {"organizationId": "org_new", "name": "Nova", "systemPrompt": "Greet.", "config": _config()},
        )
        await poll_versions(service)
        assert not service.known_missing(new_id)
        result = await service.get_full_prompt(new_id)
    finally:
        await service.aclose()
    assert "You are Nova" in result.prompt


def _config() -> dict[str, str]:
    return {"domain": "dental", "language": "en-US", "voice": "alloy", "model": "gpt-4o-mini"}
