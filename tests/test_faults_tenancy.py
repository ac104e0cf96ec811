"""The tenant boundary: with ``AGENT_ORGANIZATIONS`` set, the worker serves only those
organizations' agents. ``on_request`` refuses an agent it already holds; a job for an
agent not yet held resolves it, refuses it before any session starts, and logs the
organization, never the prompt."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from unittest.mock import AsyncMock

import pytest
from livekit.agents import AgentSession, JobRequest
from livekit.agents.ipc.mock_room import create_mock_room
from livekit.agents.testing import fake_job_context
from livekit.protocol import agent as agent_proto
from livekit.protocol import models
from structlog.testing import capture_logs

from agent.admission.requests import accept_or_reject
from agent.admission.targeting import room_name_for
from agent.job import run_job
from agent.server import build_server
from agent.sessions.factory import SessionPlan
from agent.settings import WorkerSettings, parse_organizations
from devtools.fake_models import fake_session
from devtools.processes import LocalConvex
from prompts import build_full_prompt
from services import AgentConfigService
from services.records import PromptResult
from services.store.file import local_backend_id
from tests.conftest import demo_agents
from tests.helpers import convex_service

PRIYA = local_backend_id(0)  # org_demo
LARRY = local_backend_id(3)  # org_acme
SESSIONS: list[AgentSession[None]] = []


def capturing_session(result: PromptResult) -> SessionPlan:
    plan = fake_session(result)
    SESSIONS.append(plan.session)
    return plan


def worker_settings(organizations: str | None) -> WorkerSettings:
    values = {
        "LIVEKIT_URL": "ws://127.0.0.1:9",
        "LIVEKIT_API_KEY": "devkey",
        "LIVEKIT_API_SECRET": "secret",
        "AGENT_MODEL_FACTORY": "tests.test_faults_tenancy:capturing_session",
    }
    if organizations is not None:
        values["AGENT_ORGANIZATIONS"] = organizations
    return WorkerSettings.model_validate(values)


@pytest.fixture
async def service(convex: LocalConvex) -> AsyncIterator[AgentConfigService]:
    SESSIONS.clear()
    svc = convex_service(convex)
    yield svc
    for session in SESSIONS:
        await session.aclose()
    await svc.aclose()


def job_request(room_name: str) -> tuple[JobRequest, AsyncMock, AsyncMock]:
    on_reject, on_accept = AsyncMock(), AsyncMock()
    job = agent_proto.Job(id="job-1", room=models.Room(name=room_name, sid="RM_1"))
    return JobRequest(job=job, on_reject=on_reject, on_accept=on_accept), on_reject, on_accept


async def run_in_room(service: AgentConfigService, room_name: str, settings: WorkerSettings) -> Any:
    room = create_mock_room()
    room.reset_mock()
    room.name = room_name
    with fake_job_context(room=room) as ctx:
        await run_job(ctx, settings, service)
    return room


def test_agent_organizations_is_a_comma_separated_set() -> None:
    assert parse_organizations(" org_a, org_b ,,") == frozenset({"org_a", "org_b"})
    assert parse_organizations(None) is None and parse_organizations(" ") is None
    assert worker_settings("org_demo").organizations == frozenset({"org_demo"})


async def test_a_job_for_another_organizations_agent_ends_before_any_session(service: AgentConfigService) -> None:
    larry_prompt = build_full_prompt(demo_agents()[3])
    with capture_logs() as logs:
        await run_in_room(service, room_name_for(LARRY, "c1"), worker_settings("org_demo"))
    failed = [entry for entry in logs if entry["event"] == "job_failed"]
    assert SESSIONS == []
    assert [(entry["reason"], entry["organizationId"]) for entry in failed] == [("organization_not_served", "org_acme")]
    assert all(larry_prompt not in str(entry) for entry in logs)


async def test_a_job_for_a_served_organization_runs(service: AgentConfigService) -> None:
    await run_in_room(service, room_name_for(PRIYA, "c1"), worker_settings("org_demo, org_other"))
    assert len(SESSIONS) == 1


async def test_on_request_rejects_a_held_agent_of_another_organization_naming_it(service: AgentConfigService) -> None:
    await service.get_full_prompt(LARRY)  # held: its organization is known without I/O
    request, on_reject, on_accept = job_request(room_name_for(LARRY, "c2"))
    with capture_logs() as logs:
        await accept_or_reject(request, worker_settings("org_demo"), service)
    on_reject.assert_awaited_once()
    on_accept.assert_not_awaited()
    rejected = [entry for entry in logs if entry["event"] == "job_rejected"]
    assert [entry["organizationId"] for entry in rejected] == ["org_acme"]


async def test_on_request_accepts_an_agent_not_yet_held_and_leaves_the_check_to_the_job(
    service: AgentConfigService,
) -> None:
    request, _on_reject, on_accept = job_request(room_name_for(LARRY, "c3"))
    await accept_or_reject(request, worker_settings("org_demo"), service)
    on_accept.assert_awaited_once()


async def test_unset_serves_every_organization_and_warns_at_start(service: AgentConfigService) -> None:
    with capture_logs() as logs:
        build_server(worker_settings(None))
    assert [entry["event"] for entry in logs if entry["event"] == "agent_organizations_unset"] == [
        "agent_organizations_unset"
    ]
    await run_in_room(service, room_name_for(LARRY, "c4"), worker_settings(None))
    assert len(SESSIONS) == 1
