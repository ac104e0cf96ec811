"""A THREAD-mode job that gives up while waiting for its turn to connect (its prompt
failed: an unknown or deleted agent) must not leave the connect gate taken: every later
job of the process would wait for it forever (found by the load test with deletes)."""

from __future__ import annotations

import asyncio
import contextlib
from types import SimpleNamespace
from typing import Any, cast

from livekit.agents import JobContext, JobExecutorType

from agent.connect_gate import ConnectGate
from agent.worker import _connect


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
    holding = asyncio.create_task(_connect(_ctx(first)))
    await first.connected.wait()
    waiting = asyncio.create_task(_connect(_ctx(second)))
    # Let its thread start waiting on the gate. Nothing observable marks that moment; a
    # wait too short can only hide the bug (the wait is then cancelled before it starts),
    # never fail a correct gate.
    await asyncio.sleep(0.3)
    waiting.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await waiting
    first.release.set()
    await holding
    third.release.set()
    await asyncio.wait_for(_connect(_ctx(third)), 10)
    assert not second.connected.is_set()


async def test_the_gate_admits_one_holder_at_a_time() -> None:
    gate = ConnectGate()
    inside = 0
    peak = 0

    async def enter() -> None:
        nonlocal inside, peak
        async with gate.hold():
            inside += 1
            peak = max(peak, inside)
            await asyncio.sleep(0)
            inside -= 1

    await asyncio.gather(*(enter() for _ in range(6)))
    assert peak == 1
