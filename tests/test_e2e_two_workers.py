"""Two workers (each by its real command) registered with one livekit-server share a burst
of calls; one is SIGKILLed mid-run. The dispatcher recovers the calls that were in flight
on it, and the calls after go to the survivor: every call gets an agent."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from livekit import api

from agent.dispatch import DispatchResult, dispatch_agent
from agent.targeting import room_name_for
from devtools.processes import LiveKitServer, LocalConvex
from services.file_store import local_backend_id
from tests.e2e_support import AGENT_NAME, Worker, server_api, start_worker

pytestmark = pytest.mark.e2e
PRIYA = local_backend_id(0)
CALLS = 32


@pytest.fixture
def workers(livekit: LiveKitServer, convex: LocalConvex) -> Iterator[tuple[Worker, Worker]]:
    doomed = start_worker(livekit, convex, AGENT_EXECUTOR="thread")
    try:
        survivor = start_worker(livekit, convex, AGENT_EXECUTOR="thread")
    except BaseException:
        doomed.stop()
        raise
    yield doomed, survivor
    survivor.stop()
    doomed.stop()


async def test_killing_one_of_two_workers_mid_burst_loses_no_call(
    livekit: LiveKitServer, workers: tuple[Worker, Worker]
) -> None:
    doomed, survivor = workers
    slots = asyncio.Semaphore(8)
    finished: set[str] = set()
    killed = asyncio.Event()

    async def one(n: int) -> tuple[str, DispatchResult, bool]:
        room = room_name_for(PRIYA, f"two-workers-{n}")
        async with slots:
            after_kill = killed.is_set()
            result = await dispatch_agent(lk, room, PRIYA, agent_name=AGENT_NAME, timeout=5, attempts=4)
            finished.add(room)
            await lk.room.delete_room(api.DeleteRoomRequest(room=room))
            return room, result, after_kill

    def in_flight_on_doomed() -> str | None:
        """A room whose job the doomed worker received but whose agent is not ready yet."""
        started = {e["room"] for e in doomed.events("job_started")}
        for line in list(doomed.lines):
            if "received job request" in line and "two-workers-" in line:
                room = line.split('"room": "', 1)[1].split('"', 1)[0]
                if room not in finished and room not in started:
                    return room
        return None

    async def kill_when_a_call_is_in_flight_on_it() -> str:
        def ready() -> bool:
            return len(finished) >= 4 and in_flight_on_doomed() is not None

        assert await asyncio.to_thread(doomed.wait_for, ready, 60), doomed.tail()
        room = in_flight_on_doomed()
        assert room is not None
        doomed.kill()
        killed.set()
        return room

    async with server_api(livekit) as lk:
        killer = asyncio.create_task(kill_when_a_call_is_in_flight_on_it())
        calls = await asyncio.gather(*(one(n) for n in range(CALLS)))
        stranded_room = await killer

    assert len(calls) == CALLS  # every call got an agent
    by_room = {room: result for room, result, _ in calls}
    served_by_survivor = {e["room"] for e in survivor.events("job_started")}
    assert by_room[stranded_room].attempts >= 2  # recovered by a new dispatch ...
    assert stranded_room in served_by_survivor  # ... which the survivor served
    later = [room for room, _, after_kill in calls if after_kill]
    assert later, "no call started after the kill"
    assert set(later) <= served_by_survivor
    assert survivor.process.poll() is None, survivor.tail()
