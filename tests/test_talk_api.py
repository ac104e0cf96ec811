"""The talk server's API: agents listed without prompts, bad requests refused with a
clear status and message, and a call's answer carrying a token for its room only, never
the API secret; hanging up closes the room. A real livekit-server where one is needed."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer
from livekit import api

from devtools.processes import DEMO_SEED, LiveKitServer, free_port
from devtools.talk import build_app
from devtools.talk_calls import Calls, LiveKitAccess
from services.store.file import FileAgentStore, local_backend_id
from tests.conftest import demo_agents

AGENT_NAME = "talk-api-test"


async def client_for(access: LiveKitAccess) -> AsyncIterator[TestClient[Any, Any]]:
    calls = Calls(access, FileAgentStore(DEMO_SEED))
    client = TestClient(TestServer(build_app(calls)))
    await client.start_server()
    yield client
    await client.close()
    await calls.aclose()


@pytest_asyncio.fixture
async def offline() -> AsyncIterator[TestClient[Any, Any]]:
    """The API with LiveKit on a port where nothing listens."""
    access = LiveKitAccess(f"ws://127.0.0.1:{free_port()}", "devkey", "secret", AGENT_NAME)
    async for client in client_for(access):
        yield client


@pytest_asyncio.fixture
async def online(livekit: LiveKitServer) -> AsyncIterator[TestClient[Any, Any]]:
    access = LiveKitAccess(livekit.url, livekit.api_key, livekit.api_secret, AGENT_NAME)
    async for client in client_for(access):
        yield client


def priya_id() -> str:
    return local_backend_id(next(i for i, a in enumerate(demo_agents()) if a["name"] == "Priya"))


async def test_the_agents_are_listed_by_name_without_their_prompts(offline: TestClient[Any, Any]) -> None:
    response = await offline.get("/api/agents")
    assert response.status == 200
    body = await response.json()
    assert sorted(a["name"] for a in body["agents"]) == sorted(a["name"] for a in demo_agents())
    text = json.dumps(body)
    assert all(a["systemPrompt"] not in text for a in demo_agents()), "a prompt reached the page"


async def test_bad_call_requests_are_refused_with_their_reason(offline: TestClient[Any, Any]) -> None:
    not_json = await offline.post("/api/calls", data=b"agent please")
    assert not_json.status == 400
    assert "agentId" in (await not_json.json())["error"]
    malformed = await offline.post("/api/calls", json={"agentId": "../../etc"})
    assert malformed.status == 400
    assert "agent id" in (await malformed.json())["error"]
    unknown = await offline.post("/api/calls", json={"agentId": "0" * 26 + "agents"})
    assert unknown.status == 404
    no_call = await offline.get("/api/calls/agent-nothing")
    assert no_call.status == 404


async def test_a_call_fails_with_502_when_livekit_is_unreachable(offline: TestClient[Any, Any]) -> None:
    response = await offline.post("/api/calls", json={"agentId": priya_id()})
    assert response.status == 502
    assert "cannot create a room" in (await response.json())["error"]


async def test_a_call_gets_a_token_for_its_room_only_and_hanging_up_closes_the_room(
    online: TestClient[Any, Any], livekit: LiveKitServer
) -> None:
    response = await online.post("/api/calls", json={"agentId": priya_id()})
    assert response.status == 200
    text = await response.text()
    assert livekit.api_secret not in text.replace(livekit.api_key, "")
    grant = json.loads(text)
    payload = grant["token"].split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert claims["video"]["room"] == grant["room"]
    assert claims["video"]["roomJoin"] is True
    assert "roomAdmin" not in claims["video"] and "roomCreate" not in claims["video"]
    assert grant["room"].startswith(f"agent-{priya_id()}--talk-")
    status = await online.get(f"/api/calls/{grant['room']}")
    assert (await status.json())["status"] == "dispatching"  # no worker in this test

    async with api.LiveKitAPI(livekit.http_url, livekit.api_key, livekit.api_secret) as lk:
        rooms = await lk.room.list_rooms(api.ListRoomsRequest(names=[grant["room"]]))
        assert len(rooms.rooms) == 1
        hang_up = await online.post(f"/api/calls/{grant['room']}/hangup")
        assert hang_up.status == 200
        rooms = await lk.room.list_rooms(api.ListRoomsRequest(names=[grant["room"]]))
        assert rooms.rooms == []
