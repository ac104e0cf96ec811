"""What a call does when a LiveKit node dies.

    .venv/bin/python -m bench.cluster --nodes 2 --workers 2 --calls N --concurrency C \\
        --kill-node-at T --json FILE

Starts a real cluster (``devtools.processes.start_cluster``: one redis-server, the nodes,
HAProxy), the local Convex backend (demo seed) and the worker hosts by their real command
with the fake text-only model (worker ``i`` first registered on node ``i mod nodes``).
Makes N calls through the load balancer, C at a time: each is ``dispatch_agent`` (5 s x
4 attempts), then held ``HOLD_SECONDS`` with its agent, then hung up. T seconds after the
first call, node1 (the node the first worker registered on) is SIGKILLed. Reports:

- ``in_flight_at_kill``: calls started before the kill and not yet hung up, split by
  where their room lived at the kill (``dead_node``, ``surviving_node``, ``no_room_yet``),
  each with ``calls``, ``lost`` (no agent, or its agent not back in the room on a live
  node within ``REJOIN_GRACE_SECONDS`` after the hold) and ``rejoin_s`` (from the kill to
  the agent listed again on a live node, for rooms that moved);
- ``started_after_kill``: ``calls`` and ``lost`` (the target is 0);
- ``dispatch_to_ready_s``: p50 / p95 / max of calls started before and after the kill (the
  baseline is the ``before`` row of the same run);
- ``orphan_reconnect_s``: from the kill to the orphaned worker registered again (through
  the load balancer), and ``lb_marked_down_s``: from the kill to HAProxy's DOWN;
- ``wrong_prompts``: jobs whose prompt is not Priya's current one, or stale.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from livekit import api

from agent.admission.targeting import room_name_for
from agent.dispatch import READY_ATTRIBUTE, DispatchError, DispatchResult, _taken, dispatch_agent
from bench.loadtest.report import percentile
from devtools.cluster import start_fleet
from devtools.fake_models import prompt_tag
from devtools.processes import DEMO_SEED, LiveKitCluster, start_cluster, start_local_convex
from services.store.file import local_backend_id

AGENT_NAME = "bench-cluster-agent"
PRIYA = local_backend_id(0)
HOLD_SECONDS = 4.0
"""How long a call keeps its agent before hanging up: a node killed meanwhile cuts it."""
REJOIN_GRACE_SECONDS = 30.0
"""How long after its hold a call whose room was cut waits for its agent to be back."""
TIMEOUT, ATTEMPTS = 5.0, 4


@dataclass
class Call:
    n: int
    room: str
    started: float
    ended: float = 0.0
    result: DispatchResult | None = None
    error: str = ""
    kept_agent: bool = False
    rejoined_at: float | None = None


@dataclass
class Run:
    cluster: LiveKitCluster
    calls: list[Call] = field(default_factory=list)
    killed_at: float | None = None
    placement_at_kill: dict[str, str] = field(default_factory=dict)
    marked_down_at: float | None = None


async def agent_back(lk: api.LiveKitAPI, run: Run, call: Call) -> bool:
    """Its agent (same identity) is listed, ready, in the room on a node that is alive."""
    assert call.result is not None
    node = run.cluster.node_named(run.cluster.room_nodes().get(call.room, ""))
    if node is None or not node.running:
        return False  # the listing of a room on a dead node is stale
    try:
        listed = await lk.room.list_participants(api.ListParticipantsRequest(room=call.room))
    except api.TwirpError:
        return False
    return any(
        p.identity == call.result.agent_identity and p.attributes.get(READY_ATTRIBUTE) for p in listed.participants
    )


async def one_call(lk: api.LiveKitAPI, run: Run, n: int, slots: asyncio.Semaphore) -> None:
    async with slots:
        call = Call(n, room_name_for(PRIYA, f"bench-cluster-{n}"), time.monotonic())
        run.calls.append(call)
        try:
            call.result = await dispatch_agent(
                lk, call.room, PRIYA, agent_name=AGENT_NAME, timeout=TIMEOUT, attempts=ATTEMPTS
            )
        except DispatchError as exc:
            call.error, call.ended = type(exc).__name__, time.monotonic()
            return
        await asyncio.sleep(HOLD_SECONDS)
        deadline = time.monotonic() + REJOIN_GRACE_SECONDS
        for _ in itertools.count():  # asked until back or out of time: the server sends no event
            if (kept := await agent_back(lk, run, call)) or time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.2)
        call.kept_agent, call.ended = kept, time.monotonic()
        if kept and call.rejoined_at is None and was_cut(run, call):
            call.rejoined_at = call.ended  # back before the watcher asked
        with contextlib.suppress(api.TwirpError):
            await lk.room.delete_room(api.DeleteRoomRequest(room=call.room))


def was_cut(run: Run, call: Call) -> bool:
    """The call had its agent and its room lived on the node that was killed."""
    dead = run.cluster.nodes[0].node_id
    return run.killed_at is not None and call.result is not None and run.placement_at_kill.get(call.room) == dead


async def watch_rejoins(lk: api.LiveKitAPI, run: Run) -> None:
    """After the kill: when each cut call's agent is listed again on a live node."""
    while True:
        await asyncio.sleep(0.2)
        if run.killed_at is None:
            continue
        for call in run.calls:
            if was_cut(run, call) and not call.ended and call.rejoined_at is None and await agent_back(lk, run, call):
                call.rejoined_at = time.monotonic()


async def kill_at(run: Run, seconds: float, started: float) -> None:
    await asyncio.sleep(max(0.0, started + seconds - time.monotonic()))
    run.placement_at_kill = run.cluster.room_nodes()
    at = time.monotonic()  # the orphan's reconnect can be logged before kill_node returns
    run.cluster.kill_node(0)
    run.killed_at = at
    await asyncio.to_thread(run.cluster.haproxy.wait_status, run.cluster.nodes[0].name, "DOWN")
    run.marked_down_at = time.monotonic()


def report(run: Run, orphan_registrations: list[float], wrong_prompts: int) -> dict[str, Any]:
    killed = run.killed_at
    assert killed is not None
    dead = run.cluster.nodes[0].node_id
    before = [c for c in run.calls if c.started < killed]
    after = [c for c in run.calls if c.started >= killed]
    in_flight = [c for c in before if c.ended == 0.0 or c.ended > killed]
    where: dict[str, list[Call]] = {"dead_node": [], "surviving_node": [], "no_room_yet": []}
    for call in in_flight:
        node = run.placement_at_kill.get(call.room)
        where["no_room_yet" if node is None else "dead_node" if node == dead else "surviving_node"].append(call)

    def lost(calls: list[Call]) -> int:
        return sum(1 for c in calls if c.error or not c.kept_agent)

    def latency(calls: list[Call]) -> dict[str, float | None]:
        seconds = [c.result.seconds for c in calls if c.result is not None]
        if not seconds:
            return {"p50": None, "p95": None, "max": None}
        return {
            "p50": round(percentile(seconds, 0.5), 3),
            "p95": round(percentile(seconds, 0.95), 3),
            "max": round(max(seconds), 3),
        }

    reconnects = [at - killed for at in orphan_registrations if at > killed]
    return {
        "in_flight_at_kill": {
            name: {
                "calls": len(calls),
                "lost": lost(calls),
                "rejoin_s": sorted(round(c.rejoined_at - killed, 2) for c in calls if c.rejoined_at is not None),
            }
            for name, calls in where.items()
        },
        "started_after_kill": {"calls": len(after), "lost": lost(after)},
        "dispatch_to_ready_s": {"before_kill": latency(before), "after_kill": latency(after)},
        "orphan_reconnect_s": round(reconnects[0], 3) if reconnects else None,
        "lb_marked_down_s": round(run.marked_down_at - killed, 3) if run.marked_down_at else None,
        "wrong_prompts": wrong_prompts,
        "errors": sorted({c.error for c in run.calls if c.error}),
    }


async def warm_up(lk: api.LiveKitAPI) -> None:
    """One call first, outside the figures, until the servers list its job: a fresh server
    lists none for ~5 s, and meanwhile the dispatcher takes a slow job for a dropped one
    (see ``tests/e2e_support.call_until_jobs_are_listed``)."""
    room = room_name_for(PRIYA, "bench-cluster-warm-up")
    result = await dispatch_agent(lk, room, PRIYA, agent_name=AGENT_NAME, timeout=TIMEOUT, attempts=ATTEMPTS)
    for _ in range(150):
        if await _taken(lk, room, result.dispatch_id):
            break
        await asyncio.sleep(0.1)
    await lk.room.delete_room(api.DeleteRoomRequest(room=room))


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    convex = start_local_convex(seed=DEMO_SEED)
    cluster = start_cluster(args.nodes)
    hosts = []
    try:
        env = {
            "AGENT_NAME": AGENT_NAME,
            "CONVEX_URL": convex.url,
            "CONVEX_DEPLOY_KEY": convex.deploy_key,
            "AGENT_MODEL_FACTORY": "devtools.fake_models:fake_session",
            "AGENT_EXECUTOR": "thread",
            "LOG_FORMAT": "json",
        }
        hosts = start_fleet(cluster, args.workers, env, echo=False)
        run = Run(cluster)
        slots = asyncio.Semaphore(args.concurrency)
        async with api.LiveKitAPI(
            cluster.endpoint.http_url, cluster.endpoint.api_key, cluster.endpoint.api_secret
        ) as lk:
            await warm_up(lk)
            started = time.monotonic()
            killer = asyncio.create_task(kill_at(run, args.kill_node_at, started))
            watcher = asyncio.create_task(watch_rejoins(lk, run))
            await asyncio.gather(*(one_call(lk, run, n, slots) for n in range(args.calls)))
            await killer
            watcher.cancel()
        expected = prompt_tag(json.loads(DEMO_SEED.read_text(encoding="utf-8"))["agents"][0]["fullPrompt"])
        wrong = sum(
            1 for host in hosts for job in host.jobs_started() if job["promptHash"] != expected or job["promptStale"]
        )
        figures = report(run, hosts[0].registrations(), wrong)
    finally:
        for host in hosts:
            host.stop()
        cluster.stop()
        convex.stop()
    figures["run"] = {
        "nodes": args.nodes,
        "workers": args.workers,
        "calls": args.calls,
        "concurrency": args.concurrency,
        "kill_node_at": args.kill_node_at,
        "hold_s": HOLD_SECONDS,
    }
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, required=True)
    parser.add_argument("--workers", type=int, required=True)
    parser.add_argument("--calls", type=int, required=True)
    parser.add_argument("--concurrency", type=int, required=True)
    parser.add_argument("--kill-node-at", type=float, required=True, help="SIGKILL node1 T seconds into the calls")
    parser.add_argument("--json", type=Path, required=True, help="write the figures here")
    args = parser.parse_args()
    if args.nodes < 2 or args.workers < 1 or args.calls < 1 or args.concurrency < 1 or args.kill_node_at < 0:
        parser.error("needs --nodes >= 2, --workers >= 1, --calls >= 1, --concurrency >= 1, --kill-node-at >= 0")
    figures = asyncio.run(measure(args))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
