"""One agent per room, through a real livekit-server and the worker by its real command:
a second dispatch into a served room is turned away, and the late job of a dispatch the
dispatcher withdrew never becomes a second agent."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from livekit import api

from agent.dispatch import dispatch_agent
from agent.targeting import room_name_for
from devtools.processes import LiveKitServer, LocalConvex, ServiceStartError, start_livekit
from services.file_store import local_backend_id
from tests.conftest import unavailable
from tests.e2e_support import AGENT_NAME, Worker, our_agents, server_api, start_worker

pytestmark = pytest.mark.e2e
PRIYA = local_backend_id(0)


@pytest.fixture(scope="module")
def livekit() -> Iterator[LiveKitServer]:
    try:
        server = start_livekit()
    except ServiceStartError as exc:
        unavailable(str(exc))
        raise
    yield server
    server.stop()


@pytest.fixture
def worker(livekit: LiveKitServer, convex: LocalConvex) -> Iterator[Worker]:
    started = start_worker(livekit, convex, AGENT_EXECUTOR="thread")
    yield started
    started.stop()


async def test_a_second_dispatch_into_a_room_with_our_agent_is_rejected(livekit: LiveKitServer, worker: Worker) -> None:
    room = room_name_for(PRIYA, "one-agent")
    async with server_api(livekit) as lk:
        first = await dispatch_agent(lk, room, PRIYA, agent_name=AGENT_NAME)
        request = api.CreateAgentDispatchRequest(agent_name=AGENT_NAME, room=room, metadata=f'{{"agentId": "{PRIYA}"}}')
        await lk.agent_dispatch.create_dispatch(request)

        def rejected() -> bool:
            return any(e.get("reason") == "room has an agent" for e in worker.events("job_rejected"))

        assert await asyncio.to_thread(worker.wait_for, rejected, 30), worker.tail()
        assert [a.identity for a in await our_agents(lk, room)] == [first.agent_identity]


async def test_the_late_job_of_a_withdrawn_dispatch_never_becomes_a_second_agent(
    livekit: LiveKitServer, worker: Worker
) -> None:
    room = room_name_for(PRIYA, "late-job")
    async with server_api(livekit) as lk:
        # The dispatcher's retry at its worst moment: the first dispatch's job was accepted
        # and is connecting when the dispatch is withdrawn and a new one created.
        metadata = f'{{"agentId": "{PRIYA}"}}'
        await lk.agent_dispatch.create_dispatch(
            api.CreateAgentDispatchRequest(agent_name=AGENT_NAME, room=room, metadata=metadata)
        )
        late_job = ""
        async with asyncio.timeout(30):
            while not late_job:
                for dispatch in await lk.agent_dispatch.list_dispatch(room):
                    if dispatch.agent_name == AGENT_NAME and dispatch.state.jobs:
                        late_job = dispatch.state.jobs[0].id
                        await lk.agent_dispatch.delete_dispatch(dispatch.id, room)
                await asyncio.sleep(0.01)
        result = await dispatch_agent(lk, room, PRIYA, agent_name=AGENT_NAME)

        def late_job_over() -> bool:
            return any(e.get("jobId") == late_job for e in worker.events("job_yielded") + worker.events("job_started"))

        assert await asyncio.to_thread(worker.wait_for, late_job_over, 30), worker.tail()
        assert late_job not in {e["jobId"] for e in worker.events("job_started")}
        async with asyncio.timeout(20):  # the late job's participant, if it joined, leaves
            while [a.identity for a in await our_agents(lk, room)] != [result.agent_identity]:
                await asyncio.sleep(0.1)
