"""Convex's own Python client (PyPI ``convex``) works against the local backend.

The client is blocking and holds the GIL, so these tests are synchronous. It asks for
``convex_encoded_json`` and refuses a JSON integer where Convex writes a float64
(``1736845200000.0``): these tests pass only while the local backend writes numbers,
ids, nested objects, ``null`` and ConvexError data the way the real backend does.
"""

from __future__ import annotations

from typing import Any

import pytest
from convex import ConvexError
from convex.http_client import ConvexExecutionError, ConvexHttpClient

from devtools.processes import LocalConvex
from services.store.file import local_backend_id

CONFIG = {"domain": "dental", "language": "en", "voice": "alloy", "model": "gpt-4o-mini", "temperature": 0.7}


def official_client(convex: LocalConvex) -> ConvexHttpClient:
    client = ConvexHttpClient(convex.url)
    client.set_admin_auth(convex.deploy_key)
    return client


def create(client: ConvexHttpClient, name: str) -> str:
    args: dict[str, Any] = {"organizationId": "org_official", "name": name, "systemPrompt": "Be brief."}
    args["config"] = CONFIG
    agent_id = client.mutation("agents:create", args)
    assert isinstance(agent_id, str)
    return agent_id


def test_official_client_creates_updates_and_reads_an_agent(convex: LocalConvex) -> None:
    client = official_client(convex)
    agent_id = create(client, "Official Olive")
    created = client.query("agents:get", {"agentId": agent_id})
    assert created["_id"] == agent_id
    assert isinstance(created["updatedAt"], float)
    assert isinstance(created["_creationTime"], float)
    assert created["config"] == CONFIG  # a nested object, its float kept
    assert "Be brief." in created["fullPrompt"]

    answer = client.mutation("agents:update", {"agentId": agent_id, "systemPrompt": "Be very brief."})
    assert isinstance(answer["updatedAt"], float)
    assert answer["updatedAt"] > created["updatedAt"]
    updated = client.query("agents:get", {"agentId": agent_id})
    assert updated["updatedAt"] == answer["updatedAt"]
    assert "Be very brief." in updated["fullPrompt"]


def test_official_client_reads_null_for_an_unknown_agent(convex: LocalConvex) -> None:
    assert official_client(convex).query("agents:get", {"agentId": "not-an-id"}) is None


def test_official_client_lists_agents_and_changes(convex: LocalConvex) -> None:
    client = official_client(convex)
    agent_id = create(client, "Listed Lena")
    listed = client.query("agents:list", {"organizationId": "org_official"})
    assert [row["_id"] for row in listed] == [agent_id]
    everything = client.query("agents:list", {})
    assert local_backend_id(0) in {row["_id"] for row in everything}
    changes = client.query("agents:changedSince", {"since": 0, "limit": 1000})
    assert {row["_id"] for row in changes} >= {agent_id, local_backend_id(0)}
    assert all(isinstance(row["updatedAt"], float) for row in changes)


def test_official_client_runs_the_migration_as_an_action(convex: LocalConvex) -> None:
    result = official_client(convex).action("agents:rebuildAllPrompts", {})
    assert result == {
        "success": True,
        "total": 4.0,
        "rebuilt": 1.0,
        "skipped": 3.0,
        "failed": 0.0,
        "message": "Rebuilt 1 prompts, skipped 3 agents that already had current prompts",
    }
    assert isinstance(result["total"], float)


def test_official_client_raises_convex_error_with_its_data(convex: LocalConvex) -> None:
    client = official_client(convex)
    with pytest.raises(ConvexError) as caught:
        client.mutation("agents:update", {"agentId": "nope", "name": "x"})
    assert caught.value.data == {"code": "AGENT_NOT_FOUND", "agentId": "nope", "message": "agent nope not found"}
    agent_id = create(client, "Limits Lou")
    with pytest.raises(ConvexError) as too_long:
        client.mutation("agents:update", {"agentId": agent_id, "name": "n" * 201})
    assert too_long.value.data["code"] == "INVALID_ARGUMENT"
    assert (too_long.value.data["limit"], too_long.value.data["actual"]) == (200.0, 201.0)


def test_official_client_without_the_key_cannot_see_internal_functions(convex: LocalConvex) -> None:
    with pytest.raises(ConvexExecutionError, match="Could not find public function"):
        ConvexHttpClient(convex.url).query("agents:get", {"agentId": local_backend_id(0)})
