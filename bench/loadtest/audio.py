"""``python -m bench.loadtest --mode livekit --audio``: what the caller gets, per call.

Each call is a caller (``devtools.caller``) in its own room, then ``dispatch_agent``; the
caller hears the greeting, waits for it to end, speaks a phrase (espeak-ng, real time),
and hears the reply. Per call:

- ``first_audio_ms``: the dispatch's start -> the first greeting frame above the level
  at the caller (each caller is a process of its own, joined before the dispatch);
- ``turn_ms``: the end of the caller's utterance -> the first reply frame above the level.

Rows, each on the production session against the OpenAI stand-in (same delays):

- ``cache``: this worker, greetings played from the greeting cache (the first call of
  each agent version is made before the measured ones, so it measures the steady state);
- ``tts``: this worker with ``AGENT_GREETING_CACHE=false``: the greeting through the live TTS;
- ``seed``: the seed's way (``bench/stock_worker.py``): the prompt read from Convex on
  every join, the greeting through the LLM, livekit's defaults.

``cache`` and ``tts`` run under each executor asked for; ``seed`` under livekit's default.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from livekit import api

from agent.admission.targeting import room_name_for
from agent.dispatch import DispatchError, dispatch_agent
from bench.loadtest.report import percentile
from devtools.caller import caller_token
from devtools.processes import REPO, LiveKitServer, LocalConvex, OpenAIStandin
from prompts import build_full_prompt

AGENT_NAME = "loadtest-voice"
QUESTION = "What are your opening hours?"
CALL_SECONDS = 60.0
ROWS = ("cache", "tts", "seed")


@dataclass
class AudioRow:
    row: str
    executor: str
    concurrency: int
    first_audio_ms: list[float] = field(default_factory=list)
    turn_ms: list[float] = field(default_factory=list)
    lost: int = 0
    greeting_sources: dict[str, int] = field(default_factory=dict)
    attempts: list[int] = field(default_factory=list)
    """Dispatches each measured call took (more than one: a dispatch no worker took)."""
    dispatched_at: dict[str, float] = field(default_factory=dict)
    """Room -> wall clock of its dispatch, to place the worker's log lines (see ``phases``)."""
    phases: dict[str, float | None] = field(default_factory=dict)

    def figures(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "row": self.row,
            "executor": self.executor,
            "concurrency": self.concurrency,
            "calls": len(self.first_audio_ms) + self.lost,
            "lost_calls": self.lost,
            "greeting_sources": self.greeting_sources,
            "dispatch_attempts_mean": round(statistics.mean(self.attempts), 2) if self.attempts else None,
            **self.phases,
        }
        for name, samples in (("first_audio_ms", self.first_audio_ms), ("turn_ms", self.turn_ms)):
            for label, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
                out[f"{name}_{label}"] = round(percentile(samples, q), 1) if samples else None
        return out


def with_greetings(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The load test's agents, each with a greeting in its config."""
    greeted = []
    for index, doc in enumerate(docs):
        config = {**doc["config"], "greeting": f"Thanks for calling business number {index}. How can I help?"}
        new = {**doc, "config": config}
        if "fullPrompt" in new:
            new["fullPrompt"] = build_full_prompt(new)
        greeted.append(new)
    return greeted


def worker_env(livekit: LiveKitServer, convex: LocalConvex, standin: OpenAIStandin, **extra: str) -> dict[str, str]:
    keep = ("LIVEKIT_", "CONVEX_", "PROMPT_", "AGENT", "PROBE_", "OPENAI_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(keep)}
    return env | {
        "LIVEKIT_URL": livekit.url,
        "LIVEKIT_API_KEY": livekit.api_key,
        "LIVEKIT_API_SECRET": livekit.api_secret,
        "AGENT_NAME": AGENT_NAME,
        "CONVEX_URL": convex.url,
        "CONVEX_DEPLOY_KEY": convex.deploy_key,
        "OPENAI_API_KEY": "standin-key",
        "OPENAI_BASE_URL": standin.base_url,
        "LOG_FORMAT": "json",
        "AGENT_HTTP_PORT": "0",
        # The host's CPU here also runs the callers, livekit-server and the stand-in, which
        # a worker host does not: shedding on it would measure them, not the worker.
        "AGENT_CPU_SATURATION": "2",
        **extra,
    }


async def start_worker(
    module: str, env: dict[str, str], log: IO[str], log_path: Path, *, cpus: set[int] | None = None
) -> asyncio.subprocess.Process:
    """``python -m <module> start``, waited for until it registered; ``cpus``: the only CPUs
    it (and every process it starts) may run on."""

    def pin() -> None:
        if cpus:
            os.sched_setaffinity(0, cpus)

    worker = await asyncio.create_subprocess_exec(
        sys.executable, "-m", module, "start", cwd=REPO, env=env, stdout=log, stderr=log, start_new_session=True,
        preexec_fn=pin,
    )  # fmt: skip
    for _ in range(1200):
        await asyncio.sleep(0.1)
        text = await asyncio.to_thread(log_path.read_text)
        if "registered worker" in text:
            return worker
        if worker.returncode is not None:
            break
    await stop_worker(worker)
    raise RuntimeError(f"{module} never registered:\n" + (await asyncio.to_thread(log_path.read_text))[-3000:])


async def stop_worker(worker: asyncio.subprocess.Process) -> None:
    if worker.returncode is None:
        worker.terminate()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(worker.wait(), 30)
    if worker.returncode is None:
        worker.kill()
        await worker.wait()


class CallLost(Exception):
    """A call got no agent, or its caller did not hear what it waited for."""


class CallerBot:
    """One caller process (``python -m devtools.caller --serve``), kept for many calls so
    its start (importing livekit: about a second of CPU) is paid before the measured ones,
    and apart from the other callers so no caller's audio work delays another's clock."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    @classmethod
    async def start(cls) -> CallerBot:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "devtools.caller", "--serve", "--within", str(CALL_SECONDS),
            cwd=REPO, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        return cls(process)

    async def call(
        self,
        livekit: LiveKitServer,
        lk: api.LiveKitAPI,
        agent_id: str,
        room: str,
        *,
        greeting_only: bool,
        dispatched_at: dict[str, float] | None = None,
        attempts: list[int] | None = None,
    ) -> tuple[float, float]:
        """One call; (first_audio_ms, turn_ms) from the caller's ``time.monotonic()``
        readings (one clock for every process of the host)."""
        assert self.process.stdin is not None and self.process.stdout is not None
        token = caller_token(livekit.api_key, livekit.api_secret, room, "caller")
        order = {"url": livekit.url, "token": token, "question": None if greeting_only else QUESTION}
        self.process.stdin.write((json.dumps(order) + "\n").encode())
        await self.process.stdin.drain()
        steps: dict[str, float] = {}
        dispatch: asyncio.Future[Any] | None = None
        error = ""
        try:
            async with asyncio.timeout(4 * CALL_SECONDS):
                while raw := await self.process.stdout.readline():
                    step, _, value = raw.decode().strip().partition(" ")
                    if step == "done":
                        break
                    if step == "error":
                        error = value
                    elif step in ("joined", "greeting", "said", "reply"):
                        steps[step] = float(value)
                    if step == "joined":
                        steps["dispatched"] = time.monotonic()
                        if dispatched_at is not None:
                            dispatched_at[room] = time.time()
                        dispatch = asyncio.ensure_future(dispatch_agent(lk, room, agent_id, agent_name=AGENT_NAME))
                if dispatch is not None:
                    result = await dispatch  # raises if no agent came
                    if attempts is not None:
                        attempts.append(result.attempts)
        finally:
            if dispatch is not None and not dispatch.done():
                dispatch.cancel()
        if error or "greeting" not in steps or (not greeting_only and "reply" not in steps):
            raise CallLost(error or f"the caller stopped after {sorted(steps)}")
        first = (steps["greeting"] - steps["dispatched"]) * 1000
        turn = (steps["reply"] - steps["said"]) * 1000 if not greeting_only else float("nan")
        return first, turn

    async def stop(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            await asyncio.wait_for(self.process.wait(), 10)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()


async def greetings_cached(log_path: Path, agents: int) -> None:
    """Wait (up to 30 s) until the worker logged ``greeting_cached`` for ``agents`` agents."""
    for _ in range(300):
        text = await asyncio.to_thread(log_path.read_text)
        if len({line for line in text.splitlines() if '"greeting_cached"' in line}) >= agents:
            return
        await asyncio.sleep(0.1)


async def run_calls(
    livekit: LiveKitServer,
    agent_ids: list[str],
    row: AudioRow,
    calls: int,
    tag: str,
    warm: bool,
    log_path: Path,
) -> None:
    bots = [await CallerBot.start() for _ in range(row.concurrency)]
    try:
        async with api.LiveKitAPI(livekit.http_url, livekit.api_key, livekit.api_secret) as lk:
            # Every bot's first call is a warm-up (its imports, and with ``warm`` every
            # agent's version loaded and its greeting cached): not measured.
            warm_ids = agent_ids if warm else agent_ids[: len(bots)]
            for index, agent_id in enumerate(warm_ids):
                with contextlib.suppress(DispatchError, CallLost):
                    room = room_name_for(agent_id, f"{tag}-warm-{index}")
                    await bots[index % len(bots)].call(livekit, lk, agent_id, room, greeting_only=True)
            for index, bot in enumerate(bots[len(warm_ids) :]):
                with contextlib.suppress(DispatchError, CallLost):
                    agent_id = agent_ids[index % len(agent_ids)]
                    room = room_name_for(agent_id, f"{tag}-warm-bot-{index}")
                    await bot.call(livekit, lk, agent_id, room, greeting_only=True)
            if warm:  # the measured calls find every greeting cached
                await greetings_cached(log_path, len(agent_ids))
            free: asyncio.Queue[CallerBot] = asyncio.Queue()
            for bot in bots:
                free.put_nowait(bot)

            async def call(n: int) -> None:
                agent_id = agent_ids[n % len(agent_ids)]
                bot = await free.get()
                try:
                    room = room_name_for(agent_id, f"{tag}-{n}")
                    first, turn = await bot.call(
                        livekit,
                        lk,
                        agent_id,
                        room,
                        greeting_only=False,
                        dispatched_at=row.dispatched_at,
                        attempts=row.attempts,
                    )
                except (DispatchError, CallLost) as exc:
                    row.lost += 1
                    print(f"\naudio call {tag}-{n} lost: {type(exc).__name__}: {exc}", file=sys.stderr)
                    return
                finally:
                    free.put_nowait(bot)
                row.first_audio_ms.append(first)
                row.turn_ms.append(turn)

            await asyncio.gather(*(call(n) for n in range(calls)))
    finally:
        await asyncio.gather(*(bot.stop() for bot in bots))


def phases(log_path: Path, dispatched_at: dict[str, float]) -> dict[str, float | None]:
    """Where the time to first audio went, medians over the measured calls, from the
    worker's log: dispatch -> the worker hears of the job (``received job request``), ->
    the job's session started, -> the agent's first audio frame out (``job_timings``)."""
    received: dict[str, float] = {}
    started: dict[str, tuple[float | None, float | None]] = {}
    for line in log_path.read_text().splitlines():
        if not line.startswith("{"):
            continue
        with contextlib.suppress(ValueError):
            event = json.loads(line)
            room = str(event.get("room", ""))
            if room not in dispatched_at:
                continue
            if event.get("event") == "received job request":
                stamp = event["timestamp"].replace("Z", "+00:00")
                received.setdefault(room, datetime.fromisoformat(stamp).timestamp())
            elif event.get("event") == "job_timings":
                started[room] = (event.get("sessionStartedMs"), event.get("firstAudioMs"))
    to_job = [(received[r] - at) * 1000 for r, at in dispatched_at.items() if r in received]
    to_session = [s for s, _ in started.values() if s is not None]
    to_audio = [a - s for s, a in started.values() if a is not None and s is not None]
    return {
        name: round(statistics.median(samples), 1) if samples else None
        for name, samples in (
            ("dispatch_to_job_ms_p50", to_job),
            ("job_to_session_ms_p50", to_session),
            ("session_to_audio_out_ms_p50", to_audio),
        )
    }


def greeting_sources(log_path: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for line in log_path.read_text().splitlines():
        if '"job_timings"' in line:
            with contextlib.suppress(ValueError):
                source = str(json.loads(line).get("greetingSource"))
                counts[source] = counts.get(source, 0) + 1
    return counts


async def run_audio(
    *,
    livekit: LiveKitServer,
    convex: LocalConvex,
    standin: OpenAIStandin,
    agent_ids: list[str],
    calls: int,
    concurrencies: list[int],
    executors: list[str],
    rows: list[str],
    log_dir: Path,
    settings: dict[str, str] | None = None,
    worker_cpus: set[int] | None = None,
) -> list[dict[str, Any]]:
    """Every row at every concurrency; ``settings``: extra environment for this worker's
    rows; ``worker_cpus``: the CPUs the worker is pinned to."""
    results: list[dict[str, Any]] = []
    plan: list[tuple[str, str]] = [
        (row, executor) for row in rows for executor in (executors if row != "seed" else ["default"])
    ]
    for row_name, executor in plan:
        for concurrency in concurrencies:
            convex.reset(data=True)
            standin.reset()
            tag = f"{row_name}-{executor}-c{concurrency}"
            extra = {} if row_name == "seed" else {**(settings or {}), "AGENT_EXECUTOR": executor}
            if row_name == "tts":
                extra["AGENT_GREETING_CACHE"] = "false"
            env = worker_env(livekit, convex, standin, **extra)
            module = "bench.stock_worker" if row_name == "seed" else "agent"
            log_path = log_dir / f"worker-{tag}.log"
            row = AudioRow(row_name, executor, concurrency)
            with log_path.open("w") as log:
                worker = await start_worker(module, env, log, log_path, cpus=worker_cpus)
                try:
                    await run_calls(livekit, agent_ids, row, calls, tag, row_name == "cache", log_path)
                finally:
                    await stop_worker(worker)
            row.greeting_sources = greeting_sources(log_path)
            row.phases = phases(log_path, row.dispatched_at)
            figures = row.figures()
            print(audio_line(figures), flush=True)
            results.append(figures)
    return results


def audio_line(f: dict[str, Any]) -> str:
    def ms(value: float | None) -> str:
        return f"{value:8.1f}" if value is not None else "     n/a"

    return (
        f"  {f['row']:6} {f['executor']:8} c={f['concurrency']:<3} calls {f['calls']:4}  lost {f['lost_calls']:3}  "
        f"first audio p50 {ms(f['first_audio_ms_p50'])} p95 {ms(f['first_audio_ms_p95'])} "
        f"p99 {ms(f['first_audio_ms_p99'])}  turn p50 {ms(f['turn_ms_p50'])} p95 {ms(f['turn_ms_p95'])} "
        f"p99 {ms(f['turn_ms_p99'])}\n"
        f"         dispatches per call {f.get('dispatch_attempts_mean')}; medians: dispatch -> job "
        f"{ms(f.get('dispatch_to_job_ms_p50'))}  job -> session {ms(f.get('job_to_session_ms_p50'))}  "
        f"session -> first audio out {ms(f.get('session_to_audio_out_ms_p50'))}"
    )
