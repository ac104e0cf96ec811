"""One agent per room, through a real livekit-server and the worker by its real command:
a second dispatch into a served room is turned away, the late job of a dispatch the
dispatcher withdrew never becomes a second agent, and an agent of ours whose dispatch the
room's listing lacks (in a cluster, listed on another node only) keeps its room unless it
leaves."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from livekit import api, rtc

from agent.admission.room_guard import DISPATCH_ID_ATTRIBUTE
from agent.admission.targeting import room_name_for
from agent.connect.room import UNLISTED_AGENT_GRACE_SECONDS
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


@contextlib.asynccontextmanager
async def unlisted_agent(livekit: LiveKitServer, room: str) -> AsyncIterator[rtc.Room]:
    """A participant the worker takes for an agent of ours (kind AGENT, its agent name)
    whose ``dispatchId`` no listing of the room names: what a job sees of a live agent
    whose dispatch only another cluster node lists, or of one whose dispatch was withdrawn."""
    token = (
        api.AccessToken(livekit.api_key, livekit.api_secret)
        .with_identity("agent-unlisted")
        .with_kind("agent")
        .with_attributes({"lk.agent.name": AGENT_NAME, DISPATCH_ID_ATTRIBUTE: "AD_listedelsewhere"})
        .with_grants(api.VideoGrants(room_join=True, room=room))
        .to_jwt()
    )
    joined = rtc.Room()
    await joined.connect(livekit.url, token)
    try:
        yield joined
    finally:
        await joined.disconnect()


def room_checks(worker: Worker, room: str) -> list[dict[str, Any]]:
    return [e for e in worker.events("room_check_waited") if e["room"] == room]


async def test_an_agent_of_ours_whose_dispatch_is_not_listed_and_stays_keeps_the_room(
    livekit: LiveKitServer, worker: Worker
) -> None:
    room = room_name_for(PRIYA, "unlisted-stays")
    async with server_api(livekit) as lk, unlisted_agent(livekit, room):
        metadata = f'{{"agentId": "{PRIYA}"}}'
        await lk.agent_dispatch.create_dispatch(
            api.CreateAgentDispatchRequest(agent_name=AGENT_NAME, room=room, metadata=metadata)
        )

        def yielded() -> bool:
            return any(e["room"] == room for e in worker.events("job_yielded"))

        assert await asyncio.to_thread(worker.wait_for, yielded, 30), worker.tail()
        assert [e["stayed"] for e in room_checks(worker, room)] == [1]
        assert [e for e in worker.events("job_started") if e["room"] == room] == []
        assert room_checks(worker, room)[0]["waitedMs"] >= UNLISTED_AGENT_GRACE_SECONDS * 1000

        async def only_the_unlisted_left() -> bool:  # the job that yielded leaves
            return [a.identity for a in await our_agents(lk, room)] == ["agent-unlisted"]

        assert await poll_until(only_the_unlisted_left, 20), worker.tail()
        await lk.room.delete_room(api.DeleteRoomRequest(room=room))


async def test_an_agent_of_ours_whose_dispatch_is_not_listed_and_leaves_is_replaced(
    livekit: LiveKitServer, worker: Worker
) -> None:
    room = room_name_for(PRIYA, "unlisted-leaves")
    async with server_api(livekit) as lk, unlisted_agent(livekit, room) as leaving:

        def waiting() -> bool:
            return any(e["room"] == room for e in worker.events("room_check_waiting"))

        async def leave_while_the_job_waits() -> None:  # as a withdrawn agent leaves, terminated
            assert await asyncio.to_thread(worker.wait_for, waiting, 30), worker.tail()
            await leaving.disconnect()

        result, _ = await asyncio.gather(
            dispatch_agent(lk, room, PRIYA, agent_name=AGENT_NAME), leave_while_the_job_waits()
        )
        assert result.agent_identity != "agent-unlisted"
        assert result.attempts == 1
        assert [e["stayed"] for e in room_checks(worker, room)] == [0]
        assert [a.identity for a in await our_agents(lk, room)] == [result.agent_identity]
        await lk.room.delete_room(api.DeleteRoomRequest(room=room))
