"""One agent per room, through a real livekit-server and the worker by its real command:
a second dispatch into a served room is turned away, and the late job of a dispatch the
dispatcher withdrew never becomes a second agent."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from livekit import api

from agent.admission.targeting import room_name_for
from agent.dispatch import dispatch_agent
from devtools.processes import LiveKitServer, LocalConvex
from services.store.file import local_backend_id
from tests.e2e_support import AGENT_NAME, Worker, job_of, our_agents, poll_until, server_api, start_worker

pytestmark = pytest.mark.e2e
PRIYA = local_backend_id(0)


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
        await lk.room.delete_room(api.DeleteRoomRequest(room=room))  # hang up: the worker stops at once


async def test_the_late_job_of_a_withdrawn_dispatch_never_becomes_a_second_agent(
    livekit: LiveKitServer, worker: Worker
) -> None:
    room = room_name_for(PRIYA, "late-job")
    async with server_api(livekit) as lk:
        # The dispatcher gave up on a dispatch whose job had not got going yet: it is
        # withdrawn while the worker takes the job on (livekit-agents drops a termination
        # that arrives before the job runs, so only the job itself can notice).
        metadata = f'{{"agentId": "{PRIYA}"}}'
        late = await lk.agent_dispatch.create_dispatch(
            api.CreateAgentDispatchRequest(agent_name=AGENT_NAME, room=room, metadata=metadata)
        )

        def late_job_received() -> bool:
            return any("received job request" in line and late.id in line for line in worker.lines)

        assert await asyncio.to_thread(worker.wait_for, late_job_received, 30), worker.tail()
        await lk.agent_dispatch.delete_dispatch(late.id, room)
        result = await dispatch_agent(lk, room, PRIYA, agent_name=AGENT_NAME)
        assert result.dispatch_id != late.id

        def late_job_over() -> bool:
            return any(e["room"] == room for e in worker.events("job_yielded"))

        def answer_logged() -> bool:  # logged once its attributes are published: after the caller saw it
            return any(e["jobId"] == job_of(result) for e in worker.events("job_started"))

        assert await asyncio.to_thread(worker.wait_for, late_job_over, 30), worker.tail()
        assert await asyncio.to_thread(worker.wait_for, answer_logged, 30), worker.tail()
        assert [e["jobId"] for e in worker.events("job_started") if e["room"] == room] == [job_of(result)]

        async def only_the_answer_left() -> bool:  # the late job's participant, if it joined, leaves
            return [a.identity for a in await our_agents(lk, room)] == [result.agent_identity]

        assert await poll_until(only_the_answer_left, 20), worker.tail()
        await lk.room.delete_room(api.DeleteRoomRequest(room=room))  # hang up: the worker stops at once
