"""A dispatch a worker took is waited for, however slowly its job starts; one no worker
took is re-created soon. Against a real livekit-server, with a minimal livekit-agents
worker in the test process whose jobs start late (as a job process does on a busy host):
the dispatcher's contract is with livekit-server and any worker of the agent name."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from livekit.agents import AgentServer, JobContext, JobExecutorType

from agent.admission.room_guard import AGENT_ID_ATTRIBUTE
from agent.dispatch import NOT_TAKEN_AFTER_SECONDS, READY_ATTRIBUTE, DispatchTimeoutError, dispatch_agent
from devtools.processes import LiveKitServer
from tests.e2e_support import call_until_jobs_are_listed, server_api

pytestmark = pytest.mark.e2e
AGENT_ID = "00000000000000000000010000agents"
SLOW_NAME = "slow-starting-agent"
START_DELAY_SECONDS = NOT_TAKEN_AFTER_SECONDS * 2.5


async def _job(ctx: JobContext) -> None:
    """Joins the room (START_DELAY_SECONDS after the job started if the room says "slow"),
    then reports ready."""
    if "slow" in ctx.job.room.name:
        await asyncio.sleep(START_DELAY_SECONDS)
    await ctx.connect()
    await ctx.room.local_participant.set_attributes({AGENT_ID_ATTRIBUTE: AGENT_ID, READY_ATTRIBUTE: "test"})


@pytest.fixture
async def slow_worker(livekit: LiveKitServer) -> AsyncIterator[AgentServer]:
    server = AgentServer(
        job_executor_type=JobExecutorType.THREAD,
        ws_url=livekit.url,
        api_key=livekit.api_key,
        api_secret=livekit.api_secret,
        port=0,
        load_threshold=float("inf"),
    )
    server.rtc_session(_job, agent_name=SLOW_NAME)
    registered = asyncio.Event()
    server.on("worker_registered", lambda *_: registered.set())
    run = asyncio.create_task(server.run(devmode=True))
    await asyncio.wait_for(registered.wait(), 30)
    yield server
    await server.aclose()
    run.cancel()
    await asyncio.gather(run, return_exceptions=True)


async def test_a_taken_dispatch_is_waited_for_although_its_agent_joins_after_the_drop_guess(
    livekit: LiveKitServer, slow_worker: AgentServer
) -> None:
    room = f"agent-{AGENT_ID}--slow-start"
    async with server_api(livekit) as lk:
        # A first call, so that this one is not judged while the server lists no jobs.
        first_room = f"agent-{AGENT_ID}--first"
        await call_until_jobs_are_listed(lk, first_room, AGENT_ID, agent_name=SLOW_NAME, attempt_seconds=15)
        result = await dispatch_agent(lk, room, AGENT_ID, agent_name=SLOW_NAME, timeout=START_DELAY_SECONDS + 10)
    assert result.attempts == 1  # taken: never withdrawn as "dropped", however late it joined
    assert result.seconds >= START_DELAY_SECONDS


async def test_a_dispatch_no_worker_took_is_recreated_soon_and_withdrawn_at_the_end(livekit: LiveKitServer) -> None:
    room = f"agent-{AGENT_ID}--untaken"
    timeout = NOT_TAKEN_AFTER_SECONDS * 3
    async with server_api(livekit) as lk:
        with pytest.raises(DispatchTimeoutError) as caught:
            await dispatch_agent(lk, room, AGENT_ID, agent_name="no-such-worker", timeout=timeout, attempts=1)
        left = await lk.agent_dispatch.list_dispatch(room)
    assert [d.id for d in left if d.agent_name == "no-such-worker"] == []
    # one dispatch per NOT_TAKEN_AFTER_SECONDS (plus a short pause), not one per attempt
    assert 2 <= caught.value.attempts <= 3
