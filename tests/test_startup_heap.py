"""A job process (or, under THREAD, the worker's process) freezes its start-up heap out of
the garbage collector once its prewarm has built what lives as long as it
(``agent.prewarm.heap``): a full collection then walks only what calls allocated. Run in a
process of its own: a frozen heap is for that process's life."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import DEMO_SEED, REPO

SCRIPT = """
import gc, json
from types import SimpleNamespace
from livekit.agents import JobExecutorType
from agent.prewarm.heap import freeze_startup_heap
from agent.prewarm.job_process import prewarm

before = gc.get_freeze_count()
prewarm(SimpleNamespace(executor_type=JobExecutorType.THREAD))
after_prewarm = gc.get_freeze_count()
made_for_a_call = [[object()] for _ in range(10_000)]
prewarm(SimpleNamespace(executor_type=JobExecutorType.THREAD))  # the next job runner's
freeze_startup_heap()
print("COUNTS", json.dumps({"before": before, "after_prewarm": after_prewarm, "after_more": gc.get_freeze_count()}))
"""


def test_prewarm_freezes_the_start_up_heap_once_and_never_what_calls_allocate_later() -> None:
    env = {
        **os.environ,
        "AGENTS_FILE": str(DEMO_SEED),
        "AGENT_MODEL_FACTORY": "devtools.fake_models:fake_session",  # no local models needed here
        "LIVEKIT_URL": "ws://127.0.0.1:9",
        "LIVEKIT_API_KEY": "devkey",
        "LIVEKIT_API_SECRET": "secret",
    }
    for name in ("CONVEX_URL", "CONVEX_DEPLOY_KEY", "PROMPT_CACHE_REDIS_URL"):
        env.pop(name, None)
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=True
    )
    line = next(line for line in done.stdout.splitlines() if line.startswith("COUNTS "))
    counts = json.loads(line.removeprefix("COUNTS "))
    assert counts["before"] == 0
    assert counts["after_prewarm"] > 50_000, counts  # the modules, the plugins, the service
    assert counts["after_more"] == counts["after_prewarm"], "objects allocated after start-up were frozen"
    assert "startup_heap_frozen" in done.stdout + done.stderr
