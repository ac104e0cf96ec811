"""The job's room connect: never cancelled half-way, then checked for a reason to leave."""

from __future__ import annotations

import asyncio
from typing import Any

import structlog
from livekit.agents import JobContext

from agent.admission import room_guard
from agent.connect.gate import CONNECT_GATE
from agent.settings import WorkerSettings

log = structlog.get_logger("agent.worker")


async def connect_without_cancel(ctx: JobContext) -> None:
    """``ctx.connect()``, always run to its end.

    A cancelled ``Room.connect()`` strands the FFI handshake; ~15 s later the FFI panics
    and SIGTERMs its process (python-sdks #784/#785), which under THREAD is every call of
    the worker. So a cancellation that arrives while connecting (start timeout, the
    framework's shutdown deadline) waits for the connect to finish, then takes effect.
    Connects take turns through ``CONNECT_GATE`` (see ``agent.connect.gate``)."""
    async with CONNECT_GATE.turn():  # waiting for the turn is cancellable; the connect is not
        connect = asyncio.ensure_future(ctx.connect())
        cancelled = await finish(connect)
    if cancelled is not None:
        if not connect.cancelled():
            connect.exception()  # retrieved: the cancellation is what the caller sees
        log.info("connect_finished_before_cancel", room=ctx.job.room.name, jobId=ctx.job.id)
        raise cancelled
    connect.result()


async def finish(task: asyncio.Future[Any]) -> asyncio.CancelledError | None:
    """Wait for ``task`` to end, whatever cancels the waiter; return the first such
    cancellation (for the caller to raise once the task is over)."""
    cancelled: asyncio.CancelledError | None = None
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError as exc:
            if task.done():
                break
            cancelled = cancelled or exc
    return cancelled


async def connect_and_check(ctx: JobContext, settings: WorkerSettings) -> str | None:
    """Connect; then why this job must leave, or None: its dispatch was withdrawn (the
    dispatcher replaced it) or another live agent of ours is in the room."""
    await connect_without_cancel(ctx)
    if ctx.is_fake_job():
        return None
    live_dispatches = await room_guard.dispatch_ids(ctx.api, ctx.job.room.name)
    if ctx.job.dispatch_id and ctx.job.dispatch_id not in live_dispatches:
        return "dispatch withdrawn"
    ours = [
        p
        for p in ctx.room.remote_participants.values()
        if room_guard.is_agent_kind(int(p.kind)) and room_guard.named(p, settings.agent_name)
    ]
    if room_guard.live_agents(ours, live_dispatches):
        return "room has an agent"
    return None
