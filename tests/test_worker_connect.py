"""Connecting a job's room: a cancellation never interrupts a connect in flight (a
cancelled ``Room.connect()`` strands livekit's FFI handshake and the FFI later kills the
process), and a cancelled job leaves nothing behind that could stop later jobs."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, cast

import pytest
from livekit.agents import JobContext, JobExecutorType

from agent.connect.room import connect_without_cancel


@dataclass
class Named:
    name: str = "agent-room"
    id: str = "AJ_test"
    room: Any = None


class ThreadProc:
    executor_type = JobExecutorType.THREAD


@dataclass
class ConnectingJob:
    """The part of a JobContext the connect uses: ``connect()`` finishes when the test says."""

    release: asyncio.Event = field(default_factory=asyncio.Event)
    started: asyncio.Event = field(default_factory=asyncio.Event)
    finished: bool = False
    proc: ThreadProc = field(default_factory=ThreadProc)
    job: Named = field(default_factory=lambda: Named(room=Named()))

    async def connect(self) -> None:
        self.started.set()
        await self.release.wait()
        self.finished = True


def ctx(job: ConnectingJob) -> JobContext:
    return cast(JobContext, job)


async def test_a_cancelled_job_lets_its_connect_finish_before_it_ends() -> None:
    job = ConnectingJob()
    task = asyncio.create_task(connect_without_cancel(ctx(job)))
    await job.started.wait()
    task.cancel()
    await asyncio.sleep(0)  # the cancellation is delivered; the connect must still be running
    assert not task.done()
    job.release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert job.finished


async def test_a_start_timeout_during_the_connect_still_surfaces_as_a_timeout() -> None:
    job = ConnectingJob()

    async def start() -> None:
        async with asyncio.timeout(0.01):
            await connect_without_cancel(ctx(job))

    task = asyncio.create_task(start())
    await job.started.wait()
    asyncio.get_running_loop().call_later(0.05, job.release.set)
    with pytest.raises(TimeoutError):
        await task
    assert job.finished


async def test_a_job_cancelled_while_another_connects_does_not_stop_later_jobs() -> None:
    first, cancelled, later = ConnectingJob(), ConnectingJob(), ConnectingJob()
    first_task = asyncio.create_task(connect_without_cancel(ctx(first)))
    await first.started.wait()
    cancelled_task = asyncio.create_task(connect_without_cancel(ctx(cancelled)))
    await asyncio.sleep(0.05)  # let it queue behind the first, if anything queues
    cancelled_task.cancel()
    first.release.set()
    cancelled.release.set()
    await first_task
    with pytest.raises(asyncio.CancelledError):
        await cancelled_task
    later.release.set()
    async with asyncio.timeout(10):
        await connect_without_cancel(ctx(later))
    assert later.finished
