"""One contract, run against every AgentStore: the Convex store and the embedded file."""

from __future__ import annotations

import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from devtools.processes import LocalConvex
from services.store.convex import ConvexAgentStore
from services.store.convex_client import ConvexHttpClient
from services.store.file import FileAgentStore, local_backend_id
from services.store.protocol import AgentStore
from tests.conftest import DEMO_SEED, demo_agents


class Harness:
    """A store plus a way to edit an agent behind its back, as a user would."""

    def __init__(self, store: AgentStore, edit: object) -> None:
        self.store = store
        self.edit = edit


@pytest.fixture(params=["convex", "file"])
async def harness(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness]:
    if request.param == "convex":
        convex: LocalConvex = request.getfixturevalue("convex")
        store: AgentStore = ConvexAgentStore(ConvexHttpClient(convex.url, convex.deploy_key, timeout_seconds=5))

        def edit(index: int, system_prompt: str) -> float:
            result = convex.call(
                "mutation", "agents:update", {"agentId": local_backend_id(index), "systemPrompt": system_prompt}
            )
            return float(result["updatedAt"])
    else:
        path = tmp_path / "agents.json"
        shutil.copy(DEMO_SEED, path)
        store = FileAgentStore(path)

        def edit(index: int, system_prompt: str) -> float:
            data = json.loads(path.read_text())
            doc = data["agents"][index]
            doc["systemPrompt"] = system_prompt
            doc["updatedAt"] = max(agent["updatedAt"] for agent in data["agents"]) + 1000
            doc.pop("fullPrompt", None)  # an edited file agent is legacy until rebuilt
            path.write_text(json.dumps(data))
            import os

            os.utime(path, ns=(1, 10**18 + int(doc["updatedAt"])))
            return float(doc["updatedAt"])

    yield Harness(store, edit)
    await store.aclose()


async def test_get_returns_validated_demo_agents_and_none_for_unknown(harness: Harness) -> None:
    for index, doc in enumerate(demo_agents()):
        record = await harness.store.get_agent(local_backend_id(index))
        assert record is not None
        assert (record.name, record.updated_at, record.full_prompt) == (
            doc["name"],
            doc["updatedAt"],
            doc.get("fullPrompt"),
        )
    assert await harness.store.get_agent("00000000000000000000099999agents") is None


async def test_changed_since_lists_edits_ascending(harness: Harness) -> None:
    newest = max(doc["updatedAt"] for doc in demo_agents())
    assert await harness.store.changed_since(newest + 1, 10) == []
    stamp = harness.edit(1, "edited")  # type: ignore[operator]
    rows = await harness.store.changed_since(newest + 1, 10)
    assert [(row.agent_id, row.updated_at) for row in rows] == [(local_backend_id(1), stamp)]
    everything = await harness.store.changed_since(0, 2)
    assert len(everything) == 2
    assert everything[0].updated_at <= everything[1].updated_at


async def test_save_prompt_writes_only_for_the_version_it_was_built_from(harness: Harness) -> None:
    legacy = local_backend_id(3)
    record = await harness.store.get_agent(legacy)
    assert record is not None and record.full_prompt is None
    assert await harness.store.save_prompt(legacy, "built", record.updated_at - 1, 1) is False
    assert await harness.store.save_prompt(legacy, "built", record.updated_at, 1) is True
    saved = await harness.store.get_agent(legacy)
    assert saved is not None and saved.full_prompt == "built" and saved.updated_at == record.updated_at
