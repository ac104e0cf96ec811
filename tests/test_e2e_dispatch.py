"""End to end through ``agent.dispatch.dispatch_agent``: a real livekit-server, the local
Convex backend and the worker by its real command with load shedding on (no
``--simulation``). Every call gets exactly one agent."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from livekit import api

from agent.admission.targeting import room_name_for
from agent.dispatch import DispatchError, DispatchTimeoutError, dispatch_agent
from devtools.processes import LiveKitServer, LocalConvex
from services.store.file import local_backend_id
from tests.e2e_support import AGENT_NAME, Worker, our_agents, server_api, start_worker

pytestmark = pytest.mark.e2e
PRIYA = local_backend_id(0)
FFI_HANDSHAKE_DEADLINE_SECONDS = 16.0
"""A stranded connect handshake panics the FFI 15 s later (python-sdks #784)."""


@pytest.fixture(params=["thread", "process"])
def worker(request: pytest.FixtureRequest, livekit: LiveKitServer, convex: LocalConvex) -> Iterator[Worker]:
    started = start_worker(livekit, convex, AGENT_EXECUTOR=request.param)
    yield started
    started.stop()


async def call(lk: api.LiveKitAPI, room: str) -> str:
    """A call as a platform makes it: dispatch, agent ready, hang up (the room goes)."""
    result = await dispatch_agent(lk, room, PRIYA, agent_name=AGENT_NAME)
    agents = await our_agents(lk, room)
    assert [a.identity for a in agents] == [result.agent_identity]
    await lk.room.delete_room(api.DeleteRoomRequest(room=room))
    return result.agent_identity


async def test_forty_rooms_dispatched_eight_at_a_time_each_get_one_agent(
    livekit: LiveKitServer, worker: Worker
) -> None:
    slots = asyncio.Semaphore(8)

    async def one(n: int) -> str:
        async with slots:
            try:
                return await call(lk, room_name_for(PRIYA, f"burst-{n}"))
            except DispatchError as exc:
                raise AssertionError(f"call {n} got no agent:\n{worker.tail(150)}") from exc

    async with server_api(livekit) as lk:
        identities = await asyncio.gather(*(one(n) for n in range(40)))
    assert len(set(identities)) == 40
    assert worker.process.poll() is None, worker.tail()


async def test_a_job_whose_prompt_fails_while_connecting_leaves_the_worker_up_for_the_next_calls(
    livekit: LiveKitServer, worker: Worker
) -> None:
    unknown = "00000000000000000000099999agents"  # never in Convex: the prompt fails at once
    loop = asyncio.get_running_loop()
    async with server_api(livekit) as lk:
        with pytest.raises(DispatchTimeoutError):
            bad_room = room_name_for(unknown, "bad")
            await dispatch_agent(lk, bad_room, unknown, agent_name=AGENT_NAME, timeout=3, attempts=1)
        if worker.executor == "thread":  # job processes' logs stay in the job process
            assert [e["reason"] for e in worker.events("job_failed")] == ["unknown_agent"], worker.tail()
        failed_at = loop.time()
        calls = 0
        # ten calls, and on until a stranded handshake would have brought the worker down
        while calls < 10 or loop.time() - failed_at < FFI_HANDSHAKE_DEADLINE_SECONDS:
            try:
                await call(lk, room_name_for(PRIYA, f"after-failure-{calls}"))
            except DispatchError as exc:
                raise AssertionError(f"call {calls} after the failed job got no agent:\n{worker.tail(60)}") from exc
            calls += 1
    assert worker.process.poll() is None, worker.tail()
