"""Two workers (each by its real command) registered with one livekit-server share a burst
of calls; one is SIGKILLed mid-run. The dispatcher recovers the calls that were in flight
on it, and the calls after go to the survivor: every call gets an agent."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from livekit import api

from agent.dispatch import READY_ATTRIBUTE, DispatchResult, dispatch_agent
from agent.targeting import room_name_for
from devtools.processes import LiveKitServer, LocalConvex
from services.file_store import local_backend_id
from tests.e2e_support import AGENT_NAME, Worker, job_of, our_agents, server_api, start_worker

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

    def in_flight_on_doomed() -> set[str]:
        """Rooms whose job the doomed worker received and whose call has not finished. One
        of them may already have a ready agent that its caller has not seen yet (the log
        line comes after the attributes), so the test speaks of all of them."""
        started = {e["room"] for e in doomed.events("job_started")}
        rooms = set()
        for line in list(doomed.lines):
            if "received job request" in line and "two-workers-" in line:
                room = line.split('"room": "', 1)[1].split('"', 1)[0]
                if room not in finished and room not in started:
                    rooms.add(room)
        return rooms

    async def kill_when_a_call_is_in_flight_on_it() -> set[str]:
        def ready() -> bool:
            return len(finished) >= 4 and bool(in_flight_on_doomed())

        for _ in range(100):  # a call whose agent is ready may not be logged yet: ask the server
            assert await asyncio.to_thread(doomed.wait_for, ready, 60), doomed.tail()
            # Frozen while the server is asked, so no agent of it turns ready between the
            # answer and the SIGKILL (that race once made a "stranded" call one it served).
            doomed.pause()
            rooms = {room for room in in_flight_on_doomed() if not await has_ready_agent(room)}
            if rooms:
                break
            doomed.resume()
        assert rooms
        doomed.kill()
        killed.set()
        return rooms

    async def has_ready_agent(room: str) -> bool:
        return any(a.attributes.get(READY_ATTRIBUTE) for a in await our_agents(lk, room))

    async with server_api(livekit) as lk:
        killer = asyncio.create_task(kill_when_a_call_is_in_flight_on_it())
        calls = await asyncio.gather(*(one(n) for n in range(CALLS)))
        stranded_rooms = await killer

    assert len(calls) == CALLS  # every call got an agent
    by_room = {room: result for room, result, _ in calls}
    # Whose agent answered, by its job: livekit-agents logs "received job request" before
    # the job runs, while "job_started" can come after the caller has hung up.
    survivor_jobs = {e["job_id"] for e in survivor.events("received job request")}
    served_by_survivor = {room for room, result in by_room.items() if job_of(result) in survivor_jobs}
    recovered = [r for r in stranded_rooms if by_room[r].attempts >= 2 and r in served_by_survivor]
    assert recovered, stranded_rooms  # a call stranded on the killed worker: re-dispatched, served by the survivor
    later = [room for room, _, after_kill in calls if after_kill]
    assert later, "no call started after the kill"
    assert set(later) <= served_by_survivor
    assert survivor.process.poll() is None, survivor.tail()
