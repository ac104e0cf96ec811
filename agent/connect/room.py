"""The job's room connect: never cancelled half-way, then checked for a reason to leave."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import structlog
from livekit import rtc
from livekit.agents import JobContext

from agent.admission import room_guard
from agent.connect.gate import CONNECT_GATE
from agent.settings import WorkerSettings
from services.hints import clip

log = structlog.get_logger("agent.worker")

RELISTS = 2
"""How many more times a job lists its room's dispatches when one it looks for (its own,
another agent's) is missing, keeping every dispatch any listing named. A deleted
dispatch stays missing; in a split room (below) a listing answers from either copy, so a
dispatch only one copy holds is missed by all three listings about one time in eight."""
UNLISTED_AGENT_GRACE_SECONDS = 3.0
"""How long a job waits for an agent of ours whose dispatch the room's listings lack to
leave before it yields to it. Such an agent is either leaving (its dispatch was withdrawn:
livekit-server terminates its job, the dispatcher removes it; about a second) or live in
a split room: in a cluster, dispatches that create one new room at the same moment can
leave livekit-server (1.13.5) with two copies of the room, each holding some of its
dispatches, and ``ListDispatch`` answers from either copy, changing from one call to the
next for seconds (``bench.cluster_listing``, figures in docs/fleet.md). Counting such an
agent as gone made two agents; counting it as live would make a replacement yield to a
leaving agent. Waiting tells them apart, and costs time only when an agent is unlisted."""


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
    dispatcher replaced it) or another live agent of ours is in the room. An agent of ours
    whose dispatch is not listed is live if it is still there after
    ``UNLISTED_AGENT_GRACE_SECONDS``."""
    await connect_without_cancel(ctx)
    if ctx.is_fake_job():
        return None
    ours = room_guard.ours(ctx.room.remote_participants.values(), settings.agent_name)
    wanted = {ctx.job.dispatch_id} | {p.attributes.get(room_guard.DISPATCH_ID_ATTRIBUTE, "") for p in ours}
    wanted.discard("")
    live_dispatches = await room_guard.dispatch_ids(ctx.api, ctx.job.room.name)
    for _ in range(RELISTS):  # a split room's listing answers from one copy or the other
        if wanted <= live_dispatches:
            break
        live_dispatches |= await room_guard.dispatch_ids(ctx.api, ctx.job.room.name)
    if ctx.job.dispatch_id and ctx.job.dispatch_id not in live_dispatches:
        return "dispatch withdrawn"
    if room_guard.live_agents(ours, live_dispatches):
        return "room has an agent"
    if ours:  # agents of ours whose dispatch is not listed: leaving, or listed elsewhere
        waited = time.perf_counter()
        check_log = log.bind(room=clip(ctx.job.room.name), jobId=clip(ctx.job.id), unlisted=len(ours))
        check_log.info("room_check_waiting")
        staying = await departures(ctx.room, {p.identity for p in ours}, UNLISTED_AGENT_GRACE_SECONDS)
        check_log.info(
            "room_check_waited", stayed=len(staying), waitedMs=round((time.perf_counter() - waited) * 1000, 1)
        )
        if staying:
            return "room has an agent"
    return None


async def departures(room: rtc.Room, identities: set[str], seconds: float) -> set[str]:
    """Wait until none of ``identities`` is in ``room`` or ``seconds`` passed; return
    those still there."""
    remaining = identities & set(room.remote_participants)
    if not remaining:
        return set()
    all_gone = asyncio.Event()

    def left(participant: rtc.RemoteParticipant) -> None:
        remaining.discard(participant.identity)
        if not remaining:
            all_gone.set()

    room.on("participant_disconnected", left)
    try:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await all_gone.wait()
    finally:
        room.off("participant_disconnected", left)
    return set(remaining)
