"""Deletes agents through ``agents:remove`` while joins run (``--deletes-per-minute``),
recording each delete in the version history so the checker can flag a prompt served
for an agent that was gone."""

from __future__ import annotations

import asyncio
import time

import httpx

from bench.loadtest.checker import VersionHistory
from bench.loadtest.workload import Workload, delete_picker
from devtools.processes import LocalConvex
from services.store.file import local_backend_id


class Deleter:
    def __init__(self, convex: LocalConvex, workload: Workload, history: VersionHistory) -> None:
        self._convex, self._workload, self._history = convex, workload, history
        self.deleted: list[str] = []

    async def run(self, stop: asyncio.Event) -> None:
        rate = self._workload.deletes_per_minute / 60
        if rate <= 0:
            return
        rng = delete_picker(self._workload)
        alive = list(range(self._workload.agents))
        headers = {"Authorization": f"Convex {self._convex.deploy_key}"}
        async with httpx.AsyncClient(base_url=self._convex.url, headers=headers, timeout=30) as client:
            while alive:
                try:
                    await asyncio.wait_for(stop.wait(), rng.expovariate(rate))
                    return
                except TimeoutError:
                    pass
                agent_id = local_backend_id(alive.pop(rng.randrange(len(alive))))
                body = {"path": "agents:remove", "args": {"agentId": agent_id}}
                answer = (await client.post("/api/mutation", json=body)).json()
                if answer.get("status") != "success":
                    continue
                # Committed by now: stamp it after the answer, as the editor does for edits.
                self._history.delete(agent_id, time.time(), float(answer["value"]["updatedAt"]))
                self.deleted.append(agent_id)
