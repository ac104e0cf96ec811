"""Hostile room names and dispatch metadata: every input ends in a target or a typed
rejection (never OverflowError or RecursionError), every log line stays bounded, and a
version hint buys an unknown agent no store read."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from typing import Any
from unittest.mock import AsyncMock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from livekit.agents import JobRequest
from livekit.protocol import agent as agent_proto
from livekit.protocol import models
from structlog.testing import capture_logs

from agent.admission.requests import accept_or_reject
from agent.admission.targeting import JobTarget, JobTargetError, resolve_target, room_name_for
from agent.settings import WorkerSettings
from devtools.processes import LocalConvex
from services import AgentConfigError, AgentConfigService, AgentNotFoundError
from services.store.factory import default_store_factory
from services.store.file import local_backend_id
from tests.helpers import convex_service, gets, settings_for

AGENT = local_backend_id(0)
UNKNOWN = "00000000000000000000099999agents"
MESSAGE_LIMIT = 400  # characters an error message may take
LOG_LIMIT = 2_000  # characters one captured log entry may take


def _metadata(agent_id: str, updated_at: str) -> str:
    return '{"agentId": "%s", "updatedAt": %s}' % (agent_id, updated_at)  # noqa: UP031 - raw JSON on purpose


HOSTILE_METADATA = {
    "400-digit updatedAt": _metadata(AGENT, "1" + "0" * 400),
    "1e400 updatedAt": _metadata(AGENT, "1e400"),
    "NaN updatedAt": _metadata(AGENT, "NaN"),
    "negative updatedAt": _metadata(AGENT, "-5"),
    "string updatedAt": _metadata(AGENT, '"1736845200000"'),
    "100,000 nested brackets": "[" * 100_000 + "]" * 100_000,
    "3,000 nested brackets": "[" * 2_000 + "]" * 2_000,
    "nested objects": '{"a":' * 1_500 + "1" + "}" * 1_500,
    "1 MB agentId": json.dumps({"agentId": "a" * 1_000_000}),
    "1 MB of padding": json.dumps({"agentId": AGENT, "pad": "x" * 1_000_000}),
}


@pytest.mark.parametrize("metadata", HOSTILE_METADATA.values(), ids=HOSTILE_METADATA.keys())
def test_hostile_dispatch_metadata_is_a_clean_bounded_rejection(metadata: str) -> None:
    with pytest.raises(JobTargetError) as info:
        resolve_target(room_name_for(AGENT), metadata)
    assert len(str(info.value)) < MESSAGE_LIMIT


def test_a_one_megabyte_room_name_is_a_bounded_rejection() -> None:
    with pytest.raises(JobTargetError) as info:
        resolve_target("agent-" + "a" * 1_000_000, "")
    assert len(str(info.value)) < MESSAGE_LIMIT


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
hints = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=10**300, max_value=10**400),
    st.floats(),
    st.text(max_size=30),
)
agent_ids = st.one_of(st.just(AGENT), st.text(max_size=80), st.text(alphabet="0123456789abcdefz", max_size=70))
ours = st.builds(lambda a, h, x: json.dumps({"agentId": a, "updatedAt": h, "x": x}), agent_ids, hints, json_values)
metadata_texts = st.one_of(st.text(max_size=200), ours, st.builds(json.dumps, json_values))
room_names = st.one_of(
    st.text(max_size=200), st.builds(lambda a, s: f"agent-{a}--{s}", agent_ids, st.text(max_size=70))
)


@settings(max_examples=300, deadline=None)
@given(room=room_names, metadata=metadata_texts)
def test_any_room_name_and_metadata_give_a_target_or_a_typed_bounded_rejection(room: str, metadata: str) -> None:
    try:
        target = resolve_target(room, metadata)
    except JobTargetError as exc:
        assert len(str(exc)) < MESSAGE_LIMIT
    else:
        assert isinstance(target, JobTarget)


def _worker_settings() -> WorkerSettings:
    return WorkerSettings.model_validate(
        {
            "LIVEKIT_URL": "ws://127.0.0.1:9",
            "LIVEKIT_API_KEY": "devkey",
            "LIVEKIT_API_SECRET": "secret",
            "AGENT_MODEL_FACTORY": "devtools.fake_models:fake_session",
        }
    )


def _request(room: str, metadata: str) -> tuple[JobRequest, AsyncMock, AsyncMock]:
    on_reject, on_accept = AsyncMock(), AsyncMock()
    job = agent_proto.Job(id="job-1", room=models.Room(name=room, sid="RM_1"), metadata=metadata)
    return JobRequest(job=job, on_reject=on_reject, on_accept=on_accept), on_reject, on_accept


def _embedded() -> AgentConfigService:
    embedded = settings_for(None)
    return AgentConfigService(embedded, store_factory=default_store_factory(embedded), run_refresher=False)


def _bounded(logs: Sequence[Mapping[str, Any]]) -> bool:
    return all(len(str(entry)) < LOG_LIMIT for entry in logs)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    room=st.one_of(room_names, st.just("agent-" + "b" * 100_000)),
    metadata=st.one_of(metadata_texts, st.sampled_from(list(HOSTILE_METADATA.values()))),
)
def test_on_request_answers_any_input_with_accept_or_reject_and_bounded_logs(room: str, metadata: str) -> None:
    service = _SERVICE.get()
    request, on_reject, on_accept = _request(room, metadata)
    with capture_logs() as logs:
        asyncio.run(accept_or_reject(request, _worker_settings(), service))
    assert on_reject.await_count + on_accept.await_count == 1
    assert _bounded(logs)


@settings(max_examples=150, deadline=None)
@given(agent_id=st.one_of(agent_ids, st.just("c" * 1_000_000)), hint=hints)
def test_the_service_answers_any_id_and_hint_with_a_prompt_or_a_typed_error(agent_id: str, hint: Any) -> None:
    service = _SERVICE.get()
    with capture_logs() as logs:
        try:
            result = asyncio.run(service.get_full_prompt(agent_id, updated_at=hint))
        except AgentConfigError as exc:
            assert len(str(exc)) < MESSAGE_LIMIT
        else:
            assert result.agent.agent_id == agent_id
    assert _bounded(logs)


class _Shared:
    """One embedded service for the property tests (hypothesis calls a test many times)."""

    def __init__(self) -> None:
        self._service: AgentConfigService | None = None

    def get(self) -> AgentConfigService:
        if self._service is None:
            self._service = _embedded()
        return self._service

    async def aclose(self) -> None:
        if self._service is not None:
            await self._service.aclose()
            self._service = None


_SERVICE = _Shared()


@pytest.fixture(autouse=True, scope="module")
def _close_shared_service() -> Any:
    yield
    asyncio.run(_SERVICE.aclose())


async def test_a_version_hint_does_not_buy_an_unknown_agent_a_store_read(convex: LocalConvex) -> None:
    service = convex_service(convex)
    try:
        with pytest.raises(AgentNotFoundError):
            await service.get_full_prompt(UNKNOWN)
        for hint in (1.0, 1_736_845_200_000, 9e15):
            with pytest.raises(AgentNotFoundError):
                await service.get_full_prompt(UNKNOWN, updated_at=hint)
        request, on_reject, on_accept = _request(room_name_for(UNKNOWN), _metadata(UNKNOWN, "1736845200000"))
        await accept_or_reject(request, _worker_settings(), service)
    finally:
        await service.aclose()
    assert gets(convex) == 1
    on_reject.assert_awaited_once()
    on_accept.assert_not_awaited()
