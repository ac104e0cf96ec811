"""A real LiveKit cluster: two livekit-server nodes sharing one redis-server behind HAProxy,
and two worker hosts (each by its real command, both with the load balancer's URL, the
first registered on node1 and the second on node2). Calls go through the load balancer;
node1 is SIGKILLed in the middle of a burst and later comes back.

The tests share one cluster and run in order: the kill test leaves node1 dead and the
last test brings it back (and kills it first if the kill test did not get that far)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from livekit import api

from agent.admission.targeting import room_name_for
from agent.dispatch import READY_ATTRIBUTE, DispatchResult, dispatch_agent
from devtools.fake_models import prompt_tag
from devtools.processes import LiveKitCluster, LocalConvex, ServiceStartError, start_cluster
from services.store.file import local_backend_id
from tests.conftest import demo_agents, unavailable
from tests.e2e_support import AGENT_NAME, Worker, job_of, our_agents, poll_until, server_api, start_worker

pytestmark = pytest.mark.e2e
PRIYA = local_backend_id(0)
TIMEOUT, ATTEMPTS = 5.0, 4
"""The dispatcher's budget for every call here: 4 attempts of 5 s."""


@dataclass
class Fleet:
    cluster: LiveKitCluster
    orphan: Worker
    """First registered on node1, the node the kill test kills."""
    other: Worker
    first_registered_on: list[list[str]]
    """For each worker, the nodes whose log showed its first registration (read at once:
    a node's kept output is its last 200 lines)."""

    @property
    def workers(self) -> tuple[Worker, Worker]:
        return self.orphan, self.other


@pytest.fixture(scope="module")
def fleet(convex_server: LocalConvex) -> Iterator[Fleet]:
    try:
        cluster = start_cluster(nodes=2)
    except ServiceStartError as exc:
        unavailable(str(exc))
        raise
    convex_server.reset(data=True)
    workers: list[Worker] = []
    try:
        for index in range(2):
            with cluster.only_through(index):  # its first registration goes to this node
                workers.append(
                    start_worker(
                        cluster.endpoint,
                        convex_server,
                        AGENT_EXECUTOR="thread",
                        PROMPT_CACHE_REDIS_URL=cluster.redis.url,
                    )
                )
        yield Fleet(cluster, workers[0], workers[1], [registered_on(cluster, worker) for worker in workers])
    finally:
        for worker in workers:
            worker.stop()
        cluster.stop()


def worker_id(worker: Worker) -> str:
    return str(worker.events("registered worker")[0]["id"])


def registered_on(cluster: LiveKitCluster, worker: Worker, seconds: float = 10) -> list[str]:
    """The nodes whose log says ``worker`` (its first registration) registered there;
    asked until one does (a node may log it just after answering the worker)."""
    wanted = worker_id(worker)
    deadline = time.monotonic() + seconds
    while True:
        found = [
            node.name
            for node in cluster.nodes
            if node.managed is not None
            and any("worker registered" in line and wanted in line for line in node.managed.output)
        ]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.05)  # the node's output has no event to wait on


def served_by(worker: Worker, result: DispatchResult) -> bool:
    return job_of(result) in {e["job_id"] for e in worker.events("received job request")}


async def call(lk: api.LiveKitAPI, name: str) -> DispatchResult:
    return await dispatch_agent(
        lk, room_name_for(PRIYA, name), PRIYA, agent_name=AGENT_NAME, timeout=TIMEOUT, attempts=ATTEMPTS
    )


async def call_on(lk: api.LiveKitAPI, cluster: LiveKitCluster, index: int, name: str) -> DispatchResult:
    """A call whose room lives on node ``index``: created first with CreateRoom's
    ``node_id`` (livekit-server otherwise picks a node itself, at random)."""
    room = room_name_for(PRIYA, name)
    await lk.room.create_room(api.CreateRoomRequest(name=room, node_id=cluster.nodes[index].node_id))
    return await call(lk, name)


async def hang_up(lk: api.LiveKitAPI, results: list[DispatchResult]) -> None:
    for result in results:
        with contextlib.suppress(api.TwirpError):  # a room on a dead node cannot be deleted yet
            await lk.room.delete_room(api.DeleteRoomRequest(room=result.room))


async def test_calls_through_the_load_balancer_reach_an_agent_whichever_node_hosts_the_room(fleet: Fleet) -> None:
    assert fleet.first_registered_on == [["node1"], ["node2"]], (fleet.orphan.tail(5), fleet.other.tail(5))
    cluster = fleet.cluster
    hosted: dict[str, str | None] = {}  # room -> the node hosting it while its agent was ready
    results: list[DispatchResult] = []

    def served_across() -> set[int]:
        """The workers (by index; worker i registered on node i) that served a room hosted
        on another node than their own."""
        return {
            i
            for i, worker in enumerate(fleet.workers)
            for r in results
            if served_by(worker, r) and hosted[r.room] != cluster.nodes[i].node_id
        }

    async with server_api(cluster.endpoint) as lk:
        for n in range(16):  # rooms on both nodes, until each worker served one on the other node
            results.append(await call_on(lk, cluster, n % 2, f"lb-{n}"))
            hosted[results[-1].room] = cluster.room_nodes().get(results[-1].room)
            await hang_up(lk, results[-1:])
            if n >= 1 and served_across() == {0, 1}:
                break
    wanted = {r.room: cluster.nodes[n % 2].node_id for n, r in enumerate(results)}
    assert hosted == wanted, hosted  # every call got its agent in a room on the node it was made for
    assert served_across() == {0, 1}, [(r.room, hosted[r.room], r.agent_identity) for r in results]


async def test_two_dispatches_into_one_room_through_two_nodes_give_one_agent(fleet: Fleet) -> None:
    room = room_name_for(PRIYA, "two-nodes-one-room")
    async with (
        server_api(fleet.cluster.node_endpoint(0)) as via_node1,
        server_api(fleet.cluster.node_endpoint(1)) as via_node2,
    ):
        first, second = await asyncio.gather(
            *(
                dispatch_agent(lk, room, PRIYA, agent_name=AGENT_NAME, timeout=TIMEOUT, attempts=ATTEMPTS)
                for lk in (via_node1, via_node2)
            )
        )
        # A caller returns as soon as an agent is ready, maybe before its own dispatch's job
        # was even offered: wait until both jobs were dealt with (started, yielded to the
        # other agent or rejected by the worker's room guard), then for the one agent left.
        decided = await asyncio.to_thread(_wait_for_outcomes, fleet, room, 2, 30)
        settled = await poll_until(lambda: _agents_are(via_node1, room, 1), 20)
        agents = await our_agents(via_node1, room)
        await via_node1.room.delete_room(api.DeleteRoomRequest(room=room))
    offered = {e["dispatch_id"] for w in fleet.workers for e in w.events("received job request") if e["room"] == room}
    assert decided, (offered, _outcomes(fleet, room))
    # Both dispatches (one through each node) reached the workers; a dispatcher that found its
    # dispatch not yet listed re-creates it (dispatch_agent), which only adds offers.
    assert len(offered) >= 2, offered
    assert settled, ([(a.identity, dict(a.attributes)) for a in agents], _outcomes(fleet, room))
    assert first.agent_identity == second.agent_identity == agents[0].identity


def _outcomes(fleet: Fleet, room: str) -> list[str]:
    """What the workers did with this room's jobs (``job_rejected`` may come twice for
    one dispatch: livekit-server offers a rejected job to the other worker)."""
    names = ("job_started", "job_yielded", "job_rejected")
    return [name for w in fleet.workers for name in names for e in w.events(name) if e.get("room") == room]


def _wait_for_outcomes(fleet: Fleet, room: str, count: int, seconds: float) -> bool:
    """Block until the workers logged ``count`` outcomes for ``room``'s jobs."""
    return _wait_for_logs(fleet, lambda: len(_outcomes(fleet, room)) >= count, seconds)


def _wait_for_logs(fleet: Fleet, predicate: Callable[[], bool], seconds: float) -> bool:
    """Block until ``predicate()`` holds after some worker's output, or ``seconds``."""
    deadline = time.monotonic() + seconds
    for worker in itertools.cycle(fleet.workers):
        if predicate():
            return True
        if time.monotonic() > deadline:
            return False
        worker.wait_for(predicate, 0.2)
    return False


def _jobs_started(fleet: Fleet, rooms: set[str]) -> dict[str, int]:
    counts = dict.fromkeys(rooms, 0)
    for worker in fleet.workers:
        for event in worker.events("job_started"):
            if event["room"] in counts:
                counts[event["room"]] += 1
    return counts


async def _agents_are(lk: api.LiveKitAPI, room: str, count: int) -> bool:
    return len(await our_agents(lk, room)) == count


async def test_killing_a_node_mid_burst_keeps_the_survivors_calls_and_loses_no_later_call(fleet: Fleet) -> None:
    cluster = fleet.cluster
    dead, survivor = cluster.nodes
    killed = asyncio.Event()
    finished = 0

    async def one(lk: api.LiveKitAPI, n: int, slots: asyncio.Semaphore) -> tuple[DispatchResult, bool]:
        nonlocal finished
        if n >= 12:  # the burst's last calls start only after the kill, so there always are some
            await killed.wait()
        async with slots:
            after_kill = killed.is_set()
            result = await call(lk, f"burst-{n}")
            finished += 1
        await hang_up(lk, [result])
        return result, after_kill

    async def kill_mid_burst(lk: api.LiveKitAPI, redial: str) -> DispatchResult:
        """Kill, then call at once into a room the dead node hosted: the survivor answers
        "unavailable" until it notices the death (~5 s), which the dispatcher rides out."""

        async def six_finished() -> bool:
            return finished >= 6

        assert await poll_until(six_finished, 60), "the burst never got going"
        dead.kill()
        killed.set()
        return await dispatch_agent(lk, redial, PRIYA, agent_name=AGENT_NAME, timeout=TIMEOUT, attempts=ATTEMPTS)

    async with server_api(cluster.endpoint) as lk:
        held = await calls_on_every_node(lk, cluster)  # in progress at the kill
        placed = cluster.room_nodes()
        on_survivor = [r for r in held if placed.get(r.room) == survivor.node_id]
        before = {r.room: await _agent_sids(lk, r.room) for r in on_survivor}
        slots = asyncio.Semaphore(4)
        on_dead = [r for r in held if placed.get(r.room) == dead.node_id]
        killer = asyncio.create_task(kill_mid_burst(lk, on_dead[0].room))
        outcomes = await asyncio.gather(*(one(lk, n, slots) for n in range(18)), return_exceptions=True)
        redialled = await killer  # raises if that call got no agent
        failed = [(n, repr(o)) for n, o in enumerate(outcomes) if isinstance(o, BaseException)]
        assert not failed, failed
        redialled_on = cluster.room_nodes().get(redialled.room)
        burst = [o for o in outcomes if not isinstance(o, BaseException)]

        # The orphaned worker reconnects through the load balancer, to the survivor.
        assert await asyncio.to_thread(
            fleet.orphan.wait_for, lambda: len(fleet.orphan.events("registered worker")) >= 2, 60
        ), fleet.orphan.tail()
        assert fleet.orphan.events("registered worker")[1]["url"] == cluster.url, fleet.orphan.tail(10)
        cluster.haproxy.wait_status(dead.name, "DOWN")

        # ... and takes calls again.
        taken_again = await calls_until_served_by(lk, fleet.orphan)
        after = {r.room: await _agent_sids(lk, r.room) for r in on_survivor}
        await hang_up(lk, held)

    later = [r for r, after_kill in burst if after_kill]
    assert later, "no call started after the kill"
    assert on_survivor, f"no call in progress lived on {survivor.name}: {placed}"
    assert redialled_on == survivor.node_id, (redialled, redialled_on)  # the room moved to the survivor
    assert after == before, "a call on the surviving node lost or changed its agent"
    assert served_by(fleet.orphan, taken_again[-1]), fleet.orphan.tail()
    assert_every_job_ran_the_current_prompt(fleet)


async def calls_until_served_by(lk: api.LiveKitAPI, worker: Worker) -> list[DispatchResult]:
    """Calls (hung up at once) until ``worker`` serves one; at most 16."""
    calls: list[DispatchResult] = []
    for n in range(16):
        calls.append(await call(lk, f"after-reconnect-{n}"))
        await hang_up(lk, calls[-1:])
        if served_by(worker, calls[-1]):
            break
    return calls


async def calls_on_every_node(lk: api.LiveKitAPI, cluster: LiveKitCluster) -> list[DispatchResult]:
    """Two calls on each node, left in progress."""
    return [await call_on(lk, cluster, n % len(cluster.nodes), f"held-{n}") for n in range(2 * len(cluster.nodes))]


def assert_every_job_ran_the_current_prompt(fleet: Fleet) -> None:
    """Priya's prompt was never edited here: every job must run it, and none stale."""
    expected = prompt_tag(demo_agents()[0]["fullPrompt"])
    for worker in fleet.workers:
        started = worker.events("job_started")
        assert started, worker.tail()
        assert {e["promptHash"] for e in started} == {expected}, started
        assert not [e for e in started if e["promptStale"]], started


async def _agent_sids(lk: api.LiveKitAPI, room: str) -> list[tuple[str, str, bool]]:
    """Each ready agent's identity, participant sid (a rejoin gets a new one), readiness."""
    return sorted((a.identity, a.sid, bool(a.attributes.get(READY_ATTRIBUTE))) for a in await our_agents(lk, room))


async def test_a_node_that_comes_back_takes_rooms_again_and_nothing_is_dispatched_twice(fleet: Fleet) -> None:
    cluster = fleet.cluster
    node = cluster.nodes[0]
    if node.running:  # the kill test did not get that far
        node.kill()
    cluster.haproxy.wait_status(node.name, "DOWN")
    cluster.restart_node(0)
    results: list[DispatchResult] = []
    hosts: set[str | None] = set()
    async with server_api(cluster.endpoint) as lk:
        for n in range(24):
            results.append(await call(lk, f"back-{n}"))
            hosts.add(cluster.room_nodes().get(results[-1].room))
            if node.node_id in hosts:
                break
        rooms = {r.room for r in results}
        # An agent is ready (its attributes) just before its worker logs job_started.
        logged = await asyncio.to_thread(
            _wait_for_logs, fleet, lambda: min(_jobs_started(fleet, rooms).values()) >= 1, 20
        )
        agents = {r.room: await our_agents(lk, r.room) for r in results}
        await hang_up(lk, results)
    assert node.node_id in hosts, f"{node.name} ({node.node_id}) hosted none of {len(results)} rooms: {hosts}"
    assert logged, _jobs_started(fleet, rooms)
    assert {room: len(a) for room, a in agents.items() if len(a) != 1} == {}
    jobs_per_room = _jobs_started(fleet, rooms)
    assert {room: count for room, count in jobs_per_room.items() if count != 1} == {}, jobs_per_room
