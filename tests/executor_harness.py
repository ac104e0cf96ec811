"""Runs the real worker's AgentServer unregistered and feeds it simulated jobs through
the real executors (THREAD or PROCESS). Used as a subprocess by test_worker_executors:

    python -m tests.executor_harness ROOM [ROOM ...]

Settings come from the environment, as for the worker, with
``AGENT_MODEL_FACTORY=tests.fake_models:recording_fake_session`` and ``HARNESS_EVENTS``
naming a file: each job that resolves its prompt appends a line there, which is how
the harness knows to send the next one. The worker's own logs go to stdout.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from livekit.protocol import models

from agent.settings import WorkerSettings
from agent.worker import build_server


def count_lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


async def main(rooms: list[str]) -> None:
    server = build_server(WorkerSettings.from_env())
    started = asyncio.Event()
    server.on("worker_started", started.set)
    run = asyncio.create_task(server.run(devmode=True, unregistered=True))
    await asyncio.wait_for(started.wait(), 30)
    events = Path(os.environ["HARNESS_EVENTS"])
    for index, room in enumerate(rooms):
        await server.simulate_job(room, fake_job=True, room_info=models.Room(name=room, sid=f"RM_sim{index}"))
        for _ in range(600):  # until this job has resolved its prompt and built its session
            await asyncio.sleep(0.05)
            if await asyncio.to_thread(count_lines, events) > index:
                break
        await asyncio.sleep(0.3)
    await server.aclose()
    await asyncio.gather(run, return_exceptions=True)


if __name__ == "__main__":  # forkserver re-imports this module in job processes
    asyncio.run(main(sys.argv[1:]))
