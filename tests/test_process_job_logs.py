"""Under the PROCESS executor a job runs in its own process; its events still come out
of the worker's one stream, as the same JSON as everything else.

The worker runs by its real command (``python -m agent dev --no-reload``: ``start``
binds the fixed health port 8081, which another worker on the machine may hold)
against a real livekit-server; one dispatch starts one job.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from livekit import api

from agent.admission.targeting import room_name_for
from devtools.processes import LiveKitServer, LocalConvex
from services.store.file import local_backend_id
from tests.conftest import REPO, project_free_env

pytestmark = pytest.mark.e2e
AGENT_NAME = "process-logs-agent"
PRIYA = local_backend_id(0)


@dataclass
class Worker:
    lines: list[str]
    registered: threading.Event
    started: threading.Event


@pytest.fixture
def worker(livekit: LiveKitServer, convex: LocalConvex) -> Iterator[Worker]:
    env = {
        **project_free_env(),
        "LIVEKIT_URL": livekit.url,
        "LIVEKIT_API_KEY": livekit.api_key,
        "LIVEKIT_API_SECRET": livekit.api_secret,
        "AGENT_NAME": AGENT_NAME,
        "AGENT_EXECUTOR": "process",
        "CONVEX_URL": convex.url,
        "CONVEX_DEPLOY_KEY": convex.deploy_key,
        "AGENT_MODEL_FACTORY": "devtools.fake_models:fake_session",
        "LOG_FORMAT": "json",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "agent", "dev", "--no-reload"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    running = Worker([], threading.Event(), threading.Event())

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            running.lines.append(line.rstrip("\n"))
            if "registered worker" in line:
                running.registered.set()
            if '"job_started"' in line:
                running.started.set()

    threading.Thread(target=pump, daemon=True).start()
    try:
        yield running
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(30)


async def test_a_process_jobs_events_come_out_of_the_worker_as_the_same_json(
    livekit: LiveKitServer, worker: Worker
) -> None:
    assert await asyncio.to_thread(worker.registered.wait, 60), "\n".join(worker.lines[-40:])
    async with api.LiveKitAPI(livekit.http_url, livekit.api_key, livekit.api_secret) as lk:
        request = api.CreateAgentDispatchRequest(agent_name=AGENT_NAME, room=room_name_for(PRIYA, "proc"))
        await lk.agent_dispatch.create_dispatch(request)
    assert await asyncio.to_thread(worker.started.wait, 60), "\n".join(worker.lines[-40:])
    records = []
    for line in list(worker.lines):
        if line.strip():
            try:
                records.append(json.loads(line))
            except ValueError:
                pytest.fail(f"a line that is not JSON: {line!r}")
    for record in records:
        assert {"event", "level", "logger", "timestamp"} <= set(record), record
    resolved = [record for record in records if record["event"] == "prompt_resolved"]
    job_started = [record for record in records if record["event"] == "job_started"]
    assert resolved, records
    assert job_started, records
    assert resolved[0]["agentId"] == PRIYA  # the event's fields survive the trip
    assert job_started[0]["logger"] == "agent.worker"
    assert job_started[0]["level"] == "info"
    assert job_started[0]["agentId"] == PRIYA
    assert "message" not in job_started[0]  # the forwarded record's copy of its text is dropped
