"""A THREAD-mode job that gives up while waiting for its turn to connect (its prompt
failed: an unknown or deleted agent) must not leave the connect gate taken: every later
job of the process would wait for it forever (found by the load test with deletes)."""

from __future__ import annotations

import asyncio
import contextlib
from types import SimpleNamespace
from typing import Any, cast

from livekit.agents import JobContext, JobExecutorType

from agent.connect.room import connect_without_cancel


class StubJob:
    """The two things ``_connect`` uses of a job context; ``connect`` lasts until released."""

    def __init__(self) -> None:
        self.proc = SimpleNamespace(executor_type=JobExecutorType.THREAD)
        self.connected = asyncio.Event()
        self.release = asyncio.Event()

    async def connect(self) -> None:
        self.connected.set()
        await self.release.wait()


def _ctx(job: StubJob) -> JobContext:
    return cast(JobContext, cast(Any, job))


async def test_a_job_cancelled_while_waiting_to_connect_does_not_block_later_connects() -> None:
    first, second, third = StubJob(), StubJob(), StubJob()
    holding = asyncio.create_task(connect_without_cancel(_ctx(first)))
    await first.connected.wait()
    waiting = asyncio.create_task(connect_without_cancel(_ctx(second)))
    # One turn of this loop lets the second job find the gate taken and start waiting.
    await asyncio.sleep(0)
    assert not waiting.done() and not second.connected.is_set()
    waiting.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await waiting
    first.release.set()
    await holding
    third.release.set()
    await asyncio.wait_for(connect_without_cancel(_ctx(third)), 10)
    assert not second.connected.is_set()
