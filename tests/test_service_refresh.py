"""Edits made in Convex reach every worker within the refresh interval, without a read
on the join path for agents the worker already holds."""

from __future__ import annotations

import asyncio
import time

from devtools.processes import LocalConvex
from services.store.file import local_backend_id
from tests.helpers import convex_service, gets, poll_versions

PRIYA = local_backend_id(0)
MARCO = local_backend_id(1)


async def test_an_edit_is_served_within_the_refresh_interval(convex: LocalConvex) -> None:
    service = convex_service(convex, run_refresher=True, PROMPT_REFRESH_SECONDS=0.2)
    try:
        await service.get_full_prompt(PRIYA)
        convex.call("mutation", "agents:update", {"agentId": PRIYA, "systemPrompt": "New hours: 7am to 7pm."})
        edited_at = time.monotonic()
        while True:
            result = await service.get_full_prompt(PRIYA)
            if "New hours: 7am to 7pm." in result.prompt:
                break
            assert time.monotonic() - edited_at < 10, "edit never reached the worker"
            await asyncio.sleep(0.05)
    finally:
        await service.aclose()
    # The refresher loaded the new version before pointing joins at it: the join that
    # first saw the edit was served from RAM.
    assert result.source == "ram"
    assert result.stale is False


async def test_a_hot_agent_edit_costs_the_refresher_one_read_and_joins_none(convex: LocalConvex) -> None:
    service = convex_service(convex, run_refresher=True, PROMPT_REFRESH_SECONDS=3600)
    try:
        await service.get_full_prompt(PRIYA)
        assert (await poll_versions(service)) == []
        updated = convex.call("mutation", "agents:update", {"agentId": PRIYA, "name": "Priya Two"})
        changed = await poll_versions(service)
        reads_after_refresh = gets(convex)
        result = await service.get_full_prompt(PRIYA)
    finally:
        await service.aclose()
    assert [(c.agent_id, c.updated_at) for c in changed] == [(PRIYA, updated["updatedAt"])]
    assert reads_after_refresh == 2
    assert gets(convex) == 2
    assert result.source == "ram"
    assert result.updated_at == updated["updatedAt"]
    assert "You are Priya Two" in result.prompt


async def test_overlapping_polls_apply_each_change_once(convex: LocalConvex) -> None:
    service = convex_service(convex, run_refresher=True, PROMPT_REFRESH_SECONDS=3600)
    try:
        convex.call("mutation", "agents:update", {"agentId": MARCO, "name": "Marco Two"})
        first = await poll_versions(service)
        second = await poll_versions(service)  # re-reads the overlap window
        result = await service.get_full_prompt(MARCO)
    finally:
        await service.aclose()
    assert [c.agent_id for c in first] == [MARCO]
    assert second == []
    assert "You are Marco Two" in result.prompt
    # Marco was not held, so the refresher only recorded the version; the join read it.
    assert result.source == "db"


async def test_the_refresher_starts_from_now_and_never_scans_the_table(convex: LocalConvex) -> None:
    service = convex_service(convex, run_refresher=True, PROMPT_REFRESH_SECONDS=3600)
    try:
        changed = await poll_versions(service)
    finally:
        await service.aclose()
    assert changed == []  # the seed's agents are older than the start-up overlap window
    assert convex.stats()["byPath"].get("agents:changedSince", 0) >= 1
    assert gets(convex) == 0
