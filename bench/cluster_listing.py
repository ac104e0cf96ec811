"""Whether a cluster's nodes agree on a room's dispatches when two dispatches create the
room through two nodes at once.

    .venv/bin/python -m bench.cluster_listing --rooms N [--json FILE]

Starts a real cluster (``devtools.processes.start_cluster``: one redis-server, two
livekit-server nodes, HAProxy) and no worker. For each of N new rooms it creates two
dispatches at the same moment, one through each node's own address, then lists the
room's dispatches through both nodes at 0.1 s and then every second for 5 s. A room is
**split** when the two nodes' listings differ at any of those times. In the same run, N
rooms whose two dispatches are both created through node1, and the baseline: N rooms
created by one dispatch. Reports ``two_nodes``, ``one_node`` and ``one_dispatch``, each
``{"rooms", "split"}``.

Why it matters: a job's room check (``agent.connect.room``) asks one node, through the
load balancer, which dispatches the room has; in a split room it may not see another
agent's dispatch and, before the wait for unlisted agents, took that agent for a leaving
one and started a second agent next to it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

from livekit import api

from devtools.processes import LiveKitServer, start_cluster

DISPATCH_NAME = "cluster-listing-probe"
"""No worker registers this name: the dispatches stay, nothing joins."""
SAMPLE_PAUSES = (0.1, 1.0, 1.0, 1.0, 1.0, 1.0)
"""Seconds before each comparison of the nodes' listings."""


async def _listings(nodes: list[api.LiveKitAPI], room: str) -> list[list[str]]:
    return [sorted(d.id for d in await lk.agent_dispatch.list_dispatch(room)) for lk in nodes]


async def probe_room(creators: list[api.LiveKitAPI], nodes: list[api.LiveKitAPI], room: str) -> bool:
    """Create a dispatch into ``room`` through each of ``creators`` at once; True when the
    ``nodes``' listings of it ever disagree within 5 s."""
    request = api.CreateAgentDispatchRequest(agent_name=DISPATCH_NAME, room=room)
    await asyncio.gather(*(lk.agent_dispatch.create_dispatch(request) for lk in creators))
    split = False
    for pause in SAMPLE_PAUSES:
        await asyncio.sleep(pause)  # sampling times, not waiting for an event
        first, *others = await _listings(nodes, room)
        split = split or any(other != first for other in others)
    await nodes[0].room.delete_room(api.DeleteRoomRequest(room=room))
    return split


def _client(server: LiveKitServer) -> api.LiveKitAPI:
    return api.LiveKitAPI(server.http_url, server.api_key, server.api_secret)


async def run(rooms: int) -> dict[str, dict[str, int]]:
    cluster = start_cluster(nodes=2)
    try:
        nodes = [_client(cluster.node_endpoint(i)) for i in range(2)]
        try:
            report = {}
            rows = (("two_nodes", nodes), ("one_node", [nodes[0], nodes[0]]), ("one_dispatch", [nodes[0]]))
            for row, creators in rows:
                split = [await probe_room(creators, nodes, f"cluster-listing-{row}-{n}") for n in range(rooms)]
                report[row] = {"rooms": rooms, "split": sum(split)}
        finally:
            for lk in nodes:
                await lk.aclose()
    finally:
        cluster.stop()
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rooms", type=int, default=20)
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args(argv)
    if args.rooms < 1:
        parser.error("--rooms must be at least 1")
    report = asyncio.run(run(args.rooms))
    labels = {
        "two_nodes": "2 dispatches, through two nodes",
        "one_node": "2 dispatches, through one node",
        "one_dispatch": "1 dispatch (baseline)",
    }
    for row, label in labels.items():
        figures = report[row]
        print(f"{label:32} rooms {figures['rooms']:4}  listings split {figures['split']:4}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
