"""The entrypoint in-process (livekit's fake job context and mock room, a fake LLM
through the model seam), against the real local Convex backend."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator
from typing import Any
from unittest.mock import AsyncMock

import pytest
from livekit.agents import AgentSession, JobRequest
from livekit.agents.ipc.mock_room import create_mock_room
from livekit.agents.testing import fake_job_context
from livekit.agents.voice.run_result import RunResult
from livekit.protocol import agent as agent_proto
from livekit.protocol import models

from agent.admission import requests as admission_requests
from agent.admission.requests import accept_or_reject
from agent.admission.targeting import room_name_for
from agent.job import run_job
from agent.server import build_server
from agent.service_holder import close_service
from agent.sessions.factory import SessionPlan
from agent.settings import WorkerSettings
from devtools.fake_models import fake_session, prompt_tag
from devtools.processes import LocalConvex
from services import AgentConfigService
from services.records import PromptResult
from services.store.file import local_backend_id
from tests.conftest import demo_agents
from tests.helpers import FaultyTransport, convex_service, gets

PRIYA, MARCO = local_backend_id(0), local_backend_id(1)
UNKNOWN = "00000000000000000000099999agents"
SESSIONS: list[AgentSession[None]] = []


def capturing_session(result: PromptResult) -> SessionPlan:
    plan = fake_session(result)
    SESSIONS.append(plan.session)
    return plan


def worker_settings() -> WorkerSettings:
    return WorkerSettings.model_validate(
        {
            "LIVEKIT_URL": "ws://127.0.0.1:9",
            "LIVEKIT_API_KEY": "devkey",
            "LIVEKIT_API_SECRET": "secret",
            "AGENT_MODEL_FACTORY": "tests.test_worker_entrypoint:capturing_session",
        }
    )


@pytest.fixture
async def service(convex: LocalConvex) -> AsyncIterator[AgentConfigService]:
    SESSIONS.clear()
    svc = convex_service(convex)
    yield svc
    for session in SESSIONS:
        await session.aclose()
    await svc.aclose()


def our_attributes(room: Any) -> list[dict[str, str]]:
    """The attribute sets the worker published (the session publishes its own state too)."""
    calls = room.local_participant.set_attributes.await_args_list
    return [call.args[0] for call in calls if call.args and "agentId" in call.args[0]]


async def run_in_room(service: AgentConfigService, room_name: str, metadata: str = "") -> Any:
    room = create_mock_room()  # livekit's own mock room (a process-wide singleton)
    room.reset_mock()
    room.local_participant.set_attributes.reset_mock()
    room.name = room_name
    with fake_job_context(room=room, job_metadata=metadata) as ctx:
        await run_job(ctx, worker_settings(), service)
    return room


async def reply_tag(session: AgentSession[None]) -> str:
    result: RunResult[None] = await session.run(user_input="what are your hours?")
    text = result.events[-1].item.text_content  # type: ignore[union-attr]
    assert text is not None and "heard=what are your hours?" in text
    return str(text.split()[0].removeprefix("prompt="))


async def test_the_llm_runs_with_the_agents_full_prompt_and_attributes_are_published(
    service: AgentConfigService,
) -> None:
    room = await run_in_room(service, room_name_for(PRIYA, "call-1"))
    assert len(SESSIONS) == 1
    assert await reply_tag(SESSIONS[0]) == prompt_tag(demo_agents()[0]["fullPrompt"])
    published = our_attributes(room)
    assert published == [
        {"agentId": PRIYA, "promptSource": "db", "promptUpdatedAt": "1767225600000", "promptStale": "false"}
    ]
    assert demo_agents()[0]["fullPrompt"] not in json.dumps(published)


async def test_dispatch_metadata_wins_over_the_room_name(service: AgentConfigService) -> None:
    metadata = json.dumps({"agentId": MARCO, "updatedAt": demo_agents()[1]["updatedAt"]})
    await run_in_room(service, room_name_for(PRIYA), metadata)
    assert await reply_tag(SESSIONS[0]) == prompt_tag(demo_agents()[1]["fullPrompt"])


@pytest.mark.parametrize("room_name", ["lobby", "agent-NOPE", room_name_for(UNKNOWN)])
async def test_jobs_it_cannot_serve_end_without_a_session(service: AgentConfigService, room_name: str) -> None:
    room = await run_in_room(service, room_name)
    assert SESSIONS == []
    assert our_attributes(room) == []


async def test_a_config_outage_for_an_unseen_agent_ends_the_job_cleanly(convex: LocalConvex) -> None:
    from tests.helpers import FaultyTransport

    SESSIONS.clear()
    svc = convex_service(convex, transport=FaultyTransport(mode="503"), CONVEX_TIMEOUT_SECONDS=0.2)
    try:
        await run_in_room(svc, room_name_for(MARCO))
    finally:
        await svc.aclose()
    assert SESSIONS == []


def job_request(room_name: str, metadata: str = "") -> tuple[JobRequest, AsyncMock, AsyncMock]:
    on_reject, on_accept = AsyncMock(), AsyncMock()
    job = agent_proto.Job(id="job-1", room=models.Room(name=room_name, sid="RM_1"), metadata=metadata)
    return JobRequest(job=job, on_reject=on_reject, on_accept=on_accept), on_reject, on_accept


async def test_on_request_rejects_rooms_that_name_no_agent_before_any_io(
    service: AgentConfigService, convex: LocalConvex
) -> None:
    request, on_reject, on_accept = job_request("lobby")
    await accept_or_reject(request, worker_settings(), service)
    on_reject.assert_awaited_once()
    on_accept.assert_not_awaited()
    assert convex.reads() == 0


async def test_on_request_rejects_agents_known_not_to_exist(service: AgentConfigService) -> None:
    with pytest.raises(Exception, match="no such agent"):
        await service.get_full_prompt(UNKNOWN)
    request, on_reject, on_accept = job_request(room_name_for(UNKNOWN))
    await accept_or_reject(request, worker_settings(), service)
    on_reject.assert_awaited_once()
    on_accept.assert_not_awaited()


async def test_on_request_accepts_and_starts_loading_the_prompt(convex: LocalConvex) -> None:
    # The read is held at the transport: it can only have been sent by on_request's
    # prefetch, since nothing else asks for the agent before the wait below.
    release, arrived = threading.Event(), threading.Event()
    transport = FaultyTransport(hold={"agents:get": release}, arrived={"agents:get": arrived})
    svc = convex_service(convex, transport=transport)
    try:
        request, on_reject, on_accept = job_request(room_name_for(MARCO, "c"))
        await accept_or_reject(request, worker_settings(), svc)
        on_reject.assert_not_awaited()
        on_accept.assert_awaited_once()
        assert on_accept.await_args is not None
        assert on_accept.await_args.args[0].attributes == {"agentId": MARCO, "dispatchId": ""}  # no server: fails open
        assert await asyncio.to_thread(arrived.wait, 10), "on_request did not start loading the prompt"
        release.set()
        result = await svc.get_full_prompt(MARCO)  # joins the prefetch's load, or hits RAM
    finally:
        release.set()
        await svc.aclose()
    assert result.source in ("db", "ram")
    assert gets(convex) == 1


async def test_closing_the_worker_closes_the_server_api_client_on_request_opened(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("CONVEX_URL", "CONVEX_DEPLOY_KEY", "PROMPT_CACHE_REDIS_URL"):
        monkeypatch.delenv(name, raising=False)  # the main service: the embedded demo store
    settings = worker_settings()
    server = build_server(settings, http_port=0)
    started = asyncio.Event()
    server.on("worker_started", started.set)
    run = asyncio.create_task(server.run(devmode=False, unregistered=True))
    try:
        await asyncio.wait_for(started.wait(), 60)
        client = admission_requests._main_process_api(settings)  # what on_request's room check opens
        session = client._session  # livekit-api's own aiohttp session (pinned version)
        assert session is not None and not session.closed
        await server.aclose()
        assert session.closed
        assert admission_requests._main_api is None  # the next on_request opens a new one
    finally:
        run.cancel()
        await asyncio.gather(run, return_exceptions=True)
        await close_service()
