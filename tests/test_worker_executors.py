"""Jobs through livekit-agents' real executors: THREAD mode shares the RAM tier between
jobs; PROCESS mode starts every job cold, and the Redis tier is what saves the read."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from devtools.processes import LocalConvex
from services.file_store import local_backend_id
from tests.conftest import REPO

PRIYA_ROOM = f"agent-{local_backend_id(0)}"
SOURCE = re.compile(r"job_started.*?promptSource[\"=: ]+\"?(\w+)")


def run_harness(convex: LocalConvex, tmp_path: Path, rooms: list[str], **env: str) -> list[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("LIVEKIT_", "CONVEX_", "PROMPT_", "AGENT"))}
    result = subprocess.run(
        [sys.executable, "-m", "tests.executor_harness", *rooms],
        cwd=REPO,
        env={
            **clean,
            "LIVEKIT_URL": "ws://127.0.0.1:9",  # unregistered: never dialled
            "LIVEKIT_API_KEY": "devkey",
            "LIVEKIT_API_SECRET": "secret",
            "CONVEX_URL": convex.url,
            "CONVEX_DEPLOY_KEY": convex.deploy_key,
            "AGENT_MODEL_FACTORY": "tests.fake_models:recording_fake_session",
            "HARNESS_EVENTS": str(tmp_path / "events.jsonl"),
            **env,
        },
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    return SOURCE.findall(output)


def test_thread_executor_second_job_resolves_from_ram_without_a_convex_read(
    convex: LocalConvex, tmp_path: Path
) -> None:
    sources = run_harness(convex, tmp_path, [PRIYA_ROOM, f"{PRIYA_ROOM}--second"], AGENT_EXECUTOR="thread")
    assert sources == ["db", "ram"]
    assert convex.stats()["byPath"].get("agents:get") == 1


def test_process_executor_without_redis_reads_convex_in_every_job(convex: LocalConvex, tmp_path: Path) -> None:
    sources = run_harness(convex, tmp_path, [PRIYA_ROOM, f"{PRIYA_ROOM}--second"], AGENT_EXECUTOR="process")
    assert sources == ["db", "db"]
    assert convex.stats()["byPath"].get("agents:get") == 2


def test_process_executor_with_redis_second_job_resolves_from_redis(
    convex: LocalConvex, redis_url: str, tmp_path: Path
) -> None:
    sources = run_harness(
        convex,
        tmp_path,
        [PRIYA_ROOM, f"{PRIYA_ROOM}--second"],
        AGENT_EXECUTOR="process",
        PROMPT_CACHE_REDIS_URL=redis_url,
    )
    assert sources == ["db", "redis"]
    assert convex.stats()["byPath"].get("agents:get") == 1
