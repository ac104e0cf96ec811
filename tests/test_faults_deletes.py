"""Deleted agents: ``agents:remove`` leaves a tombstone, the change feed reports it, and
every tier (version index, RAM, negative cache, Redis, the embedded file) lets go of the
agent within one refresh; nothing, not even an outage, brings it back."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from pathlib import Path

import pytest

from devtools.processes import LocalConvex
from services import AgentConfigService, AgentNotFoundError
from services.store.file import FileAgentStore, local_backend_id
from tests.conftest import demo_agents
from tests.helpers import FakeClock, FaultyTransport, convex_service, gets, poll_versions, settings_for

PRIYA = local_backend_id(0)
MARCO = local_backend_id(1)


async def test_a_deleted_hot_agent_is_refused_after_one_refresh_without_a_read(convex: LocalConvex) -> None:
    service = convex_service(convex, run_refresher=True, PROMPT_REFRESH_SECONDS=3600)
    try:
        await service.get_full_prompt(PRIYA)
        await service.get_full_prompt(MARCO)
        removed = convex.call("mutation", "agents:remove", {"agentId": PRIYA})
        changed = await poll_versions(service)
        reads = gets(convex)
        with pytest.raises(AgentNotFoundError):
            await service.get_full_prompt(PRIYA)
        with pytest.raises(AgentNotFoundError):
            await service.get_full_prompt(PRIYA, updated_at=changed[0].updated_at - 1)  # an old hint
        marco = await service.get_full_prompt(MARCO)
    finally:
        await service.aclose()
    assert [(c.agent_id, c.updated_at, c.deleted) for c in changed] == [(PRIYA, removed["updatedAt"], True)]
    assert service.known_missing(PRIYA)
    assert gets(convex) == reads  # the refusal came from the tombstone, not from Convex
    assert marco.source == "ram"


async def test_an_outage_after_a_delete_never_serves_the_deleted_agent_stale(convex: LocalConvex) -> None:
    clock = FakeClock()
    transport = FaultyTransport()
    service = convex_service(convex, transport=transport, clock=clock, run_refresher=True, PROMPT_REFRESH_SECONDS=3600)
    try:
        await service.get_full_prompt(PRIYA)
        convex.call("mutation", "agents:remove", {"agentId": PRIYA})
        await poll_versions(service)
        transport.mode = "503"
        clock.advance(700)  # past the negative TTL and the prompt TTL; well within stale-if-error
        with pytest.raises(AgentNotFoundError):
            await service.get_full_prompt(PRIYA)
    finally:
        transport.mode = "ok"
        await service.aclose()


async def test_a_load_that_raced_the_delete_does_not_bring_the_agent_back(convex: LocalConvex) -> None:
    transport = FaultyTransport()
    release = threading.Event()
    service = convex_service(convex, transport=transport, run_refresher=True, PROMPT_REFRESH_SECONDS=3600)
    try:
        transport.hold_answer["agents:get"] = release
        join = asyncio.create_task(service.get_full_prompt(MARCO))
        assert await asyncio.to_thread(transport.answer_held.wait, 30)  # read done, answer held
        convex.call("mutation", "agents:remove", {"agentId": MARCO})
        await poll_versions(service)
        release.set()
        with pytest.raises(AgentNotFoundError):
            await join
        with pytest.raises(AgentNotFoundError):
            await service.get_full_prompt(MARCO)
    finally:
        release.set()
        await service.aclose()


async def test_a_delete_reaches_a_fresh_process_through_redis(convex: LocalConvex, redis_url: str) -> None:
    main = convex_service(convex, run_refresher=True, PROMPT_REFRESH_SECONDS=3600, PROMPT_CACHE_REDIS_URL=redis_url)
    try:
        before = await main.get_full_prompt(PRIYA)
        await poll_versions(main)  # heartbeat: Redis now vouches for what main recorded
        convex.call("mutation", "agents:remove", {"agentId": PRIYA})
        await poll_versions(main)
        job = convex_service(convex, PROMPT_CACHE_REDIS_URL=redis_url)  # a PROCESS-mode job
        try:
            with pytest.raises(AgentNotFoundError):
                await job.get_full_prompt(PRIYA)
        finally:
            await job.aclose()
        job = convex_service(convex, PROMPT_CACHE_REDIS_URL=redis_url)
        try:
            with pytest.raises(AgentNotFoundError):
                await job.get_full_prompt(PRIYA, updated_at=before.updated_at)  # a hint naming the old version
        finally:
            await job.aclose()
    finally:
        await main.aclose()


def _write(path: Path, docs: list[dict[str, object]], mtime: float) -> None:
    path.write_text(json.dumps({"agents": docs}))
    os.utime(path, (mtime, mtime))  # a new mtime even within the filesystem's resolution


@pytest.mark.parametrize("how", ["deletedAt", "removed from the file"])
async def test_the_embedded_file_store_reports_a_delete_and_the_service_drops_it(tmp_path: Path, how: str) -> None:
    path = tmp_path / "agents.json"
    docs: list[dict[str, object]] = [{**doc, "_id": local_backend_id(i)} for i, doc in enumerate(demo_agents())]
    _write(path, docs, 1_000_000)
    settings = settings_for(None, AGENTS_FILE=str(path), PROMPT_REFRESH_SECONDS=3600)
    service = AgentConfigService(settings, store_factory=lambda: FileAgentStore(path), run_refresher=True)
    try:
        await service.get_full_prompt(PRIYA)
        await poll_versions(service)
        if how == "deletedAt":
            now_ms = time.time() * 1000  # a delete stamped now, as agents:remove would
            docs[0] = {**docs[0], "deletedAt": now_ms, "updatedAt": now_ms}
        else:
            docs = [{**doc} for doc in docs if doc["_id"] != PRIYA]
        _write(path, docs, 2_000_000)
        changed = await poll_versions(service)
        with pytest.raises(AgentNotFoundError):
            await service.get_full_prompt(PRIYA)
        marco = await service.get_full_prompt(MARCO)
    finally:
        await service.aclose()
    assert [(c.agent_id, c.deleted) for c in changed] == [(PRIYA, True)]
    assert "Marco" in marco.prompt
