"""dispatch_agent against a real livekit-server with no worker for the name: bounded,
jittered retries, every dispatch withdrawn, typed errors."""

from __future__ import annotations

import random

import pytest
from livekit import api

from agent.dispatch import (
    BACKOFF_BASE_SECONDS,
    BACKOFF_CAP_SECONDS,
    DispatchApiError,
    DispatchError,
    DispatchTimeoutError,
    backoff_delay,
    dispatch_agent,
)
from devtools.processes import LiveKitServer
from tests.e2e_support import server_api

AGENT_ID = "00000000000000000000010000agents"


def test_backoff_grows_from_the_base_to_the_cap_with_jitter() -> None:
    rng = random.Random(7)
    for attempt in range(1, 10):
        ceiling = min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2 ** (attempt - 1))
        delays = {backoff_delay(attempt, rng) for _ in range(50)}
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(delays) > 1  # jittered: callers that failed together do not retry together
    assert backoff_delay(20, rng) <= BACKOFF_CAP_SECONDS


async def test_no_agent_raises_a_timeout_error_after_the_given_attempts_and_withdraws_every_dispatch(
    livekit: LiveKitServer,
) -> None:
    room = "agent-00000000000000000000010000agents--nobody"
    async with server_api(livekit) as lk:
        with pytest.raises(DispatchTimeoutError) as caught:
            await dispatch_agent(lk, room, AGENT_ID, agent_name="no-such-worker", timeout=0.5, attempts=2)
        left = await lk.agent_dispatch.list_dispatch(room)
        assert [d.id for d in left if d.agent_name == "no-such-worker"] == []
    assert isinstance(caught.value, DispatchError)
    assert caught.value.attempts == 2  # one dispatch per attempt: none was seen dropped in 0.5 s
    assert caught.value.room == room


async def test_a_dispatch_the_server_dropped_is_recreated_within_the_attempt(livekit: LiveKitServer) -> None:
    room = "agent-00000000000000000000010000agents--dropped"
    async with server_api(livekit) as lk:
        with pytest.raises(DispatchTimeoutError) as caught:
            # no worker takes it: the dispatcher takes it as dropped after NOT_TAKEN_AFTER_SECONDS
            await dispatch_agent(lk, room, AGENT_ID, agent_name="no-such-worker", timeout=8, attempts=1)
        left = await lk.agent_dispatch.list_dispatch(room)
        assert [d.id for d in left if d.agent_name == "no-such-worker"] == []
    assert caught.value.attempts >= 2  # dispatches: the dropped one and its replacements


async def test_refused_credentials_raise_an_api_error(livekit: LiveKitServer) -> None:
    async with api.LiveKitAPI(livekit.http_url, livekit.api_key, "not-the-secret") as lk:
        with pytest.raises(DispatchApiError) as caught:
            await dispatch_agent(lk, "agent-x--y", AGENT_ID, agent_name="voice-agent")
    assert isinstance(caught.value.__cause__, api.TwirpError)
    assert caught.value.attempts == 1


async def test_bad_arguments_are_refused_before_any_request(livekit: LiveKitServer) -> None:
    async with server_api(livekit) as lk:
        with pytest.raises(ValueError, match="attempts"):
            await dispatch_agent(lk, "room", AGENT_ID, agent_name="voice-agent", attempts=0)
