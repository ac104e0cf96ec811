"""A worker whose loop stalls writes every thread's stack to stderr; one whose loop keeps
running writes nothing (``agent.stall_watch``). Each case runs in a process of its own:
faulthandler's watchdog is one per process."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow  # about 6 s each: a stall has to last

SCRIPT = """
import asyncio, sys, time
from agent.stall_watch import StallWatch

def stuck_in_a_blocking_call():
    time.sleep(3.5)

async def main(stall):
    watch = StallWatch(stall_seconds=2.0)
    watch.start(asyncio.get_running_loop())
    await asyncio.sleep(0.1)
    if stall:
        stuck_in_a_blocking_call()
    else:
        await asyncio.sleep(3.5)
    watch.stop()
    await asyncio.sleep(2.5)  # stopped: nothing more is written

asyncio.run(main(sys.argv[1] == "stall"))
"""


def run(mode: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, mode], cwd=REPO, capture_output=True, text=True, timeout=60, check=True
    )
    return done.stderr


def test_a_stalled_loop_writes_every_threads_stack_naming_the_call_it_is_stuck_in() -> None:
    stderr = run("stall")
    assert "Timeout (0:00:02)!" in stderr, stderr
    assert "stuck_in_a_blocking_call" in stderr, stderr
    assert stderr.count("Timeout (") == 1, "written again after the loop came back"


def test_a_loop_that_keeps_running_writes_nothing() -> None:
    assert run("run") == ""
