"""One call of a capacity run: a caller bot's order, the dispatch, what the caller heard."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from livekit import api

from agent.admission.targeting import room_name_for
from agent.dispatch import DispatchError, dispatch_agent
from bench.capacity.proc import process_tree
from bench.loadtest.audio import AGENT_NAME, CallerBot, start_worker, stop_worker
from devtools.caller import caller_token
from devtools.processes import (
    LiveKitServer,
    LocalConvex,
    OpenAIStandin,
)

AGENTS = 4
CALL_WITHIN = 60.0
QUESTION = "What are your opening hours?"
"""What a short call (soak, burst) asks once the greeting has played."""


@dataclass
class TalkResult:
    first_audio_ms: float | None = None
    turns_ms: list[float] = field(default_factory=list)
    gaps: int = 0
    longest_gap_ms: float = 0.0
    error: str = ""
    greeted_at: float | None = None
    ended_at: float | None = None


async def talk(
    bot: CallerBot,
    livekit: LiveKitServer,
    lk: api.LiveKitAPI,
    agent_id: str,
    room: str,
    *,
    talk_seconds: float,
    pause_seconds: float,
    question: str | None = None,
) -> TalkResult:
    """One call on ``bot``: a talking call (``talk_seconds`` > 0) or greeting + ``question``."""
    process = bot.process
    assert process.stdin is not None and process.stdout is not None
    token = caller_token(livekit.api_key, livekit.api_secret, room, "caller")
    order: dict[str, Any] = {"url": livekit.url, "token": token}
    if talk_seconds > 0:
        order |= {"talk_seconds": talk_seconds, "pause_seconds": pause_seconds}
    else:
        order["question"] = question
    process.stdin.write((json.dumps(order) + "\n").encode())
    await process.stdin.drain()
    result = TalkResult()
    dispatched = 0.0
    said: float | None = None
    dispatch: asyncio.Future[Any] | None = None
    try:
        async with asyncio.timeout(talk_seconds + 4 * CALL_WITHIN):
            while raw := await process.stdout.readline():
                step, _, value = raw.decode().strip().partition(" ")
                if step == "done":
                    break
                if step == "joined":
                    dispatched = time.monotonic()
                    dispatch = asyncio.ensure_future(dispatch_agent(lk, room, agent_id, agent_name=AGENT_NAME))
                elif step == "greeting":
                    result.greeted_at = float(value)
                    result.first_audio_ms = (float(value) - dispatched) * 1000
                elif step == "turn":
                    ended, reply = (float(v) for v in value.split())
                    result.turns_ms.append((reply - ended) * 1000)
                elif step == "said":
                    said = float(value)
                elif step == "reply" and said is not None:
                    result.turns_ms.append((float(value) - said) * 1000)
                elif step == "gaps":
                    count, longest = value.split()
                    result.gaps, result.longest_gap_ms = int(count), float(longest) * 1000
                elif step == "error":
                    result.error = value
            if dispatch is not None:
                await dispatch
    except (DispatchError, TimeoutError) as exc:
        result.error = result.error or f"{type(exc).__name__}: {str(exc)[:200]}"
    finally:
        if dispatch is not None and not dispatch.done():
            dispatch.cancel()
    result.ended_at = time.monotonic()
    if not result.error and (result.first_audio_ms is None or (question and not result.turns_ms)):
        result.error = "the caller stopped before the call's steps"
    return result


@dataclass
class Services:
    livekit: LiveKitServer
    convex: LocalConvex
    standin: OpenAIStandin
    agent_ids: list[str]
    log_dir: Path
    worker_cpus: set[int] | None = None
    """The CPUs the worker is pinned to (``--worker-cpus``); the rest run everything else."""


def job_lags(log_path: Path, rooms: set[str]) -> list[float]:
    """``loopLagP99Ms`` of each ended job of ``rooms`` (from the worker's JSON log)."""
    lags = []
    for line in log_path.read_text().splitlines():
        if '"job_ended"' not in line or not line.startswith("{"):
            continue
        with contextlib.suppress(ValueError):
            event = json.loads(line)
            if event.get("room") in rooms and event.get("loopLagP99Ms") is not None:
                lags.append(float(event["loopLagP99Ms"]))
    return lags


async def warm(bots: list[CallerBot], services: Services, lk: api.LiveKitAPI, tag: str) -> int:
    """Every bot's first call and every agent's first version: before the measured calls,
    so a step measures calls held, not imports and first synthesis."""
    queue: asyncio.Queue[CallerBot] = asyncio.Queue()
    for bot in bots:
        queue.put_nowait(bot)
    names = [*services.agent_ids, *(services.agent_ids[i % AGENTS] for i in range(max(0, len(bots) - AGENTS)))]

    async def one(index: int, agent_id: str) -> None:
        bot = await queue.get()
        try:
            room = room_name_for(agent_id, f"{tag}-warm-{index}")
            await talk(bot, services.livekit, lk, agent_id, room, talk_seconds=0, pause_seconds=0)
        finally:
            queue.put_nowait(bot)

    await asyncio.gather(*(one(i, a) for i, a in enumerate(names)))
    return len(names)


async def jobs_gone(pid: int, module: str, log_path: Path, warm_calls: int, within: float = 30.0) -> None:
    """Wait until the warm-up's jobs have ended (this worker logs ``job_ended``; a job
    still ending holds a slot the first measured call would be refused) and the process
    tree is steady (PROCESS: what stays is the worker and its idle pool)."""
    deadline = time.monotonic() + within
    while module == "agent" and time.monotonic() < deadline:
        text = await asyncio.to_thread(log_path.read_text)
        if text.count('"job_ended"') >= warm_calls:
            break
        await asyncio.sleep(0.2)
    previous = -1
    while time.monotonic() < deadline:
        count = len(process_tree(pid))
        if count == previous:
            return
        previous = count
        await asyncio.sleep(2.0)


@contextlib.asynccontextmanager
async def worker_with_callers(
    services: Services, module: str, env: dict[str, str], log_path: Path, callers: int
) -> AsyncIterator[tuple[asyncio.subprocess.Process, list[CallerBot], api.LiveKitAPI]]:
    """What every run holds: ``callers`` caller processes, the worker started by its real
    command (``python -m <module> start``, logging to ``log_path``) on fresh Convex data and
    stand-in counters, and a server API client; all stopped on the way out."""
    services.convex.reset(data=True)
    services.standin.reset()
    bots = [await CallerBot.start() for _ in range(callers)]
    try:
        with log_path.open("w") as log:
            worker = await start_worker(module, env, log, log_path, cpus=services.worker_cpus)
            try:
                async with api.LiveKitAPI(
                    services.livekit.http_url, services.livekit.api_key, services.livekit.api_secret
                ) as lk:
                    yield worker, bots, lk
            finally:
                await stop_worker(worker)
    finally:
        await asyncio.gather(*(bot.stop() for bot in bots))
