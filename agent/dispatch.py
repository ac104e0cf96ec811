"""Start a call: dispatch the agent into a room and make sure one arrives.

This is the API a platform backend calls (see README, "Starting a call")::

    async with api.LiveKitAPI(url, key, secret) as lk:
        result = await dispatch_agent(lk, "agent-<agentId>--call-8812", agent_id, agent_name="voice-agent")

livekit-server offers a dispatch's job once, to a worker with spare capacity; if none has
any at that instant the job is dropped and the room stays without an agent (the
open-source server does not retry, livekit/agents #1472). So each attempt waits for the
agent to be *ready* (a participant of kind AGENT with this ``agentId`` that has published
``promptSource``, i.e. its session runs) for up to ``timeout`` seconds.

A worker that took the job shows in the dispatch's state: livekit-server lists the job
there once the worker accepted it (usually within 0.3 s; the job's process may need
seconds more to join). A dispatch that no worker took and whose agent has not joined
after ``NOT_TAKEN_AFTER_SECONDS`` was dropped: it is deleted and re-created within the
attempt, after a jittered backoff, until its time is up: a full fleet frees slots within
seconds, and a caller that asks again soon gets the next free one. A dispatch a worker
took is never taken for dropped, however slowly its job starts. At the end of an attempt
its dispatch is deleted (livekit-server then terminates any job it still has, and the
worker makes a job of a withdrawn dispatch leave) and the next attempt starts after a
backoff. At most ``attempts`` attempts, so at most about ``attempts * timeout`` seconds.
An API failure that asking again can fix (the server "unavailable", a broken connection:
in a cluster, the node hosting the room died and the others have not noticed yet) is
tried again like a dropped dispatch, within the same time; any other raises at once.

Errors::

    DispatchError              no agent; the caller may try again later or tell the caller
    +-- DispatchTimeoutError   every attempt ran out of time (``attempts``, ``seconds``)
    +-- DispatchApiError       the LiveKit API refused, or still failed at the end (``from`` its error)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from dataclasses import dataclass

import aiohttp
from livekit import api

from agent.admission import room_guard

__all__ = [
    "DispatchApiError",
    "DispatchError",
    "DispatchResult",
    "DispatchTimeoutError",
    "backoff_delay",
    "dispatch_agent",
]

POLL_SECONDS = 0.1
"""How often an attempt asks ListParticipants (one cheap request to the server)."""
NOT_TAKEN_AFTER_SECONDS = 1.5
"""A dispatch that no worker has taken (its state lists no job) and whose agent has not
joined after this long was dropped by livekit-server (no worker had a free slot): it is
deleted and re-created within the same attempt. Measured with 16 calls at a time on 8
slots: a taken job is listed after 0.33 s (median), 1.27 s (p99), 1.48 s (max). Short,
because while a fleet is full a dropped caller only gets the next free slot by asking
again: this is the period at which waiting callers ask. livekit-server lists nothing while
it refreshes its agent namespaces (every minute, up to 5 s); a job accepted then that has
not joined in time is withdrawn, which costs that job's start, not the call."""
BACKOFF_BASE_SECONDS = 0.5
BACKOFF_CAP_SECONDS = 2.0
READY_ATTRIBUTE = "promptSource"


class DispatchError(Exception):
    """No agent arrived in the room."""

    def __init__(self, message: str, *, room: str, attempts: int, seconds: float) -> None:
        """``attempts``: dispatches created; ``seconds``: since the call."""
        super().__init__(message)
        self.room, self.attempts, self.seconds = room, attempts, seconds


class DispatchTimeoutError(DispatchError):
    """Every attempt ran out of time without a ready agent."""


class DispatchApiError(DispatchError):
    """The LiveKit API refused or failed a request."""


@dataclass(frozen=True, slots=True)
class DispatchResult:
    room: str
    agent_identity: str
    """The agent participant's identity."""
    dispatch_id: str
    attempts: int
    """Dispatches created, 1 when the first one was answered."""
    seconds: float
    """From the call to the agent being ready."""


def backoff_delay(attempt: int, rng: random.Random | None = None) -> float:
    """Seconds to wait before dispatch number ``attempt + 1``: exponential from
    ``BACKOFF_BASE_SECONDS``, capped at ``BACKOFF_CAP_SECONDS``, jittered to 50-100%."""
    ceiling = min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2 ** max(attempt - 1, 0))
    jitter = rng.uniform(0.5, 1.0) if rng is not None else random.uniform(0.5, 1.0)
    return float(ceiling * jitter)


async def dispatch_agent(
    lk: api.LiveKitAPI,
    room: str,
    agent_id: str,
    *,
    agent_name: str,
    updated_at: float | None = None,
    timeout: float = 10,  # noqa: ASYNC109 - per attempt; the interface issue 8 names
    attempts: int = 3,
) -> DispatchResult:
    """Dispatch ``agent_name`` into ``room`` for ``agent_id`` and return once its agent is
    ready; retry with a new dispatch up to ``attempts`` times. Raises ``DispatchError``."""
    if attempts < 1 or timeout <= 0:
        raise ValueError("attempts must be at least 1 and timeout positive")
    metadata = json.dumps({"agentId": agent_id, "updatedAt": updated_at})
    request = api.CreateAgentDispatchRequest(agent_name=agent_name, room=room, metadata=metadata)
    loop = asyncio.get_running_loop()
    started = time.perf_counter()
    withdrawn: set[str] = set()  # an agent of these is being terminated: never the answer
    dispatches = 0
    unavailable: Exception | None = None  # the last transient API failure, if the last try had one
    try:
        for attempt in range(1, attempts + 1):
            deadline = loop.time() + timeout
            while True:  # one attempt: a dispatch the server dropped is re-created at once
                dispatches += 1
                try:
                    dispatch = await lk.agent_dispatch.create_dispatch(request)
                    ready = await _wait_ready(lk, room, agent_id, agent_name, dispatch.id, deadline, withdrawn)
                    unavailable = None
                except (api.TwirpError, aiohttp.ClientError) as exc:
                    if not _transient(exc):
                        raise
                    unavailable, ready = exc, _DROPPED  # tried again like a dropped dispatch
                if isinstance(ready, tuple):
                    identity, dispatch_id = ready
                    seconds = time.perf_counter() - started
                    return DispatchResult(room, identity, dispatch_id or dispatch.id, dispatches, seconds)
                with contextlib.suppress(api.TwirpError, aiohttp.ClientError):  # still unavailable
                    withdrawn |= await _withdraw(lk, room, agent_name)
                # Dropped: ask again soon (jittered, so callers dropped together spread out);
                # the full exponential backoff is kept for attempts that ran out of time.
                pause = backoff_delay(1)
                if ready == _TIMED_OUT or loop.time() + pause >= deadline:
                    break
                await asyncio.sleep(pause)
            if attempt < attempts:
                await asyncio.sleep(backoff_delay(dispatches))
        if unavailable is not None:
            raise unavailable
    except (api.TwirpError, aiohttp.ClientError) as exc:
        seconds = time.perf_counter() - started
        raise DispatchApiError(
            f"LiveKit API failed after {dispatches} dispatch(es): {exc}",
            room=room,
            attempts=dispatches,
            seconds=seconds,
        ) from exc
    seconds = time.perf_counter() - started
    raise DispatchTimeoutError(
        f"no agent {agent_name!r} ready in room {room!r} after {dispatches} dispatches ({seconds:.1f} s)",
        room=room,
        attempts=dispatches,
        seconds=seconds,
    )


_TIMED_OUT = "timed out"
_DROPPED = "dropped"


async def _wait_ready(
    lk: api.LiveKitAPI,
    room: str,
    agent_id: str,
    agent_name: str,
    dispatch_id: str,
    deadline: float,
    withdrawn: set[str],
) -> tuple[str, str] | str:
    """The ready agent's identity and dispatch id; else ``_DROPPED`` when no worker has
    taken dispatch ``dispatch_id`` and no agent of ours has joined
    ``NOT_TAKEN_AFTER_SECONDS`` after it, or ``_TIMED_OUT`` at ``deadline`` (loop time)."""
    loop = asyncio.get_running_loop()
    drop_check = loop.time() + NOT_TAKEN_AFTER_SECONDS
    taken = False
    while True:
        listed = await lk.room.list_participants(api.ListParticipantsRequest(room=room))
        joined = False
        ready: tuple[str, str] | None = None
        for participant in room_guard.ours(listed.participants, agent_name):
            participant_dispatch = participant.attributes.get(room_guard.DISPATCH_ID_ATTRIBUTE, "")
            if participant_dispatch in withdrawn:
                if participant.state == api.ParticipantInfo.State.ACTIVE:  # never cut a connect short
                    await _remove(lk, room, participant.identity)  # never the answer, and it must not stay
                continue
            joined = True
            attributes = participant.attributes
            if attributes.get(room_guard.AGENT_ID_ATTRIBUTE) == agent_id and attributes.get(READY_ATTRIBUTE):
                ready = ready or (str(participant.identity), participant_dispatch)
        if ready is not None:
            return ready
        now = loop.time()
        if now >= deadline:
            return _TIMED_OUT
        if not joined and not taken:
            taken = await _taken(lk, room, dispatch_id)
            if not taken and now >= drop_check:
                return _DROPPED  # no worker took it: livekit-server dropped it
        await asyncio.sleep(min(POLL_SECONDS, max(deadline - now, 0)))


def _transient(exc: Exception) -> bool:
    """An API failure that asking again can fix: the server answered "unavailable" (in a
    cluster, the node hosting the room died and the others have not noticed yet, about 5 s)
    or the connection broke. Refused credentials or arguments are never asked again."""
    if isinstance(exc, api.TwirpError):
        return exc.status in (502, 503, 504) or exc.code == "unavailable"
    return isinstance(exc, aiohttp.ClientConnectionError)


async def _taken(lk: api.LiveKitAPI, room: str, dispatch_id: str) -> bool:
    """Whether a worker accepted the dispatch: livekit-server lists the job it assigned."""
    dispatch = await lk.agent_dispatch.get_dispatch(dispatch_id, room)
    return dispatch is not None and len(dispatch.state.jobs) > 0


async def _remove(lk: api.LiveKitAPI, room: str, identity: str) -> None:
    """Remove the agent of a withdrawn dispatch: livekit-server's termination of its job
    is lost when it reaches livekit-agents before the job runs, and a job that checked its
    dispatch just before the withdrawal would otherwise hold a slot with nobody to serve."""
    with contextlib.suppress(api.TwirpError):  # already gone
        await lk.room.remove_participant(api.RoomParticipantIdentity(room=room, identity=identity))


async def _withdraw(lk: api.LiveKitAPI, room: str, agent_name: str) -> set[str]:
    """Delete this room's dispatches of ``agent_name`` (any an earlier call left too);
    livekit-server terminates the jobs they have, a late one included. (A room created by
    a dispatch also gets the server's automatic dispatch, agent name "": not ours.)"""
    withdrawn = set()
    for dispatch in await lk.agent_dispatch.list_dispatch(room):
        if dispatch.agent_name == agent_name:
            withdrawn.add(dispatch.id)
            with contextlib.suppress(api.TwirpError):  # already gone: nothing to stop
                await lk.agent_dispatch.delete_dispatch(dispatch.id, room)
    return withdrawn
