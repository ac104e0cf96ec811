"""The change feed answering badly: one malformed row among many costs only that row,
overlapping pages are applied once, and a migration's worth of changes is reloaded a
few agents at a time."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

from prometheus_client import REGISTRY

from devtools.processes import LocalConvex
from services.freshness.refresher import MAX_CONCURRENT_RELOADS, VersionRefresher
from services.freshness.version_index import VersionIndex
from services.store.convex import ConvexAgentStore
from services.store.convex_client import ConvexHttpClient
from services.store.file import FileAgentStore, local_backend_id
from services.store.protocol import AgentVersion
from tests.helpers import FaultyTransport, convex_service, poll_versions

PRIYA = local_backend_id(0)
MANY = 10_000


def _skipped() -> float:
    return REGISTRY.get_sample_value("agent_change_feed_rows_skipped_total") or 0.0


def _many_rows_and_one_bad(value: list[dict[str, Any]]) -> list[dict[str, Any]]:
    stamp = value[0]["updatedAt"] if value else 1.0
    filler = [{"_id": f"{n:026d}agents", "updatedAt": stamp} for n in range(MANY - 1)]
    return [*filler, {"_id": 42, "updatedAt": "yesterday"}, *value]


async def test_one_malformed_row_among_ten_thousand_is_skipped_and_counted(convex: LocalConvex) -> None:
    transport = FaultyTransport()
    service = convex_service(convex, transport=transport, run_refresher=True, PROMPT_REFRESH_SECONDS=3600)
    try:
        await service.get_full_prompt(PRIYA)
        convex.call("mutation", "agents:update", {"agentId": PRIYA, "systemPrompt": "Ask for the booking code."})
        transport.rewrite["agents:changedSince"] = _many_rows_and_one_bad
        skipped_before = _skipped()
        changed = await poll_versions(service)
        result = await service.get_full_prompt(PRIYA)
    finally:
        await service.aclose()
    assert PRIYA in {row.agent_id for row in changed}
    assert len(changed) == MANY  # every good row, each once, although every page repeated them
    assert _skipped() - skipped_before >= 1
    assert "Ask for the booking code." in result.prompt


async def test_a_migration_is_reloaded_a_bounded_number_of_agents_at_a_time(convex: LocalConvex) -> None:
    transport = FaultyTransport()
    transport.rewrite["agents:changedSince"] = lambda value: [
        {"_id": f"{n:026d}agents", "updatedAt": 2e12 + n} for n in range(300)
    ]
    active = 0
    peak = 0

    async def reload(row: AgentVersion, polled_at: float) -> None:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        for _ in range(3):
            await asyncio.sleep(0)
        active -= 1

    client = ConvexHttpClient(convex.url, convex.deploy_key, timeout_seconds=5, transport=transport)
    store = ConvexAgentStore(client)
    refresher = VersionRefresher(store, VersionIndex(), interval_seconds=3600, on_new_version=reload)
    try:
        changed = await refresher.poll_once()
    finally:
        await store.aclose()
    assert len(changed) == 300
    assert peak <= MAX_CONCURRENT_RELOADS


async def test_every_page_of_a_long_feed_is_read_in_one_poll(tmp_path: Path) -> None:
    # Pages overlap by the boundary row; counting pages by total rows stopped after two.
    now_ms = time.time() * 1000
    docs = [{"_id": f"{n:026d}agents", "updatedAt": now_ms - 5_000 + n * 0.5} for n in range(2_500)]
    path = tmp_path / "agents.json"
    path.write_text(json.dumps({"agents": docs}))
    store = FileAgentStore(path)
    refresher = VersionRefresher(store, VersionIndex(), interval_seconds=3600, on_new_version=_ignore)
    try:
        changed = await refresher.poll_once()
    finally:
        await store.aclose()
    assert len(changed) == 2_500


async def _ignore(row: AgentVersion, polled_at: float) -> None:
    return None
