"""``python -m bench.loadtest --mode livekit --audio``: what the caller gets, per call.

Each call is a caller (``devtools.caller``) in its own room, then ``dispatch_agent``; the
caller hears the greeting, waits for it to end, speaks a phrase (espeak-ng, real time),
and hears the reply. Per call:

- ``first_audio_ms``: the dispatch's start -> the first greeting frame above the level
  at the caller;
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
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from livekit import api

from agent.dispatch import DispatchError, dispatch_agent
from agent.targeting import room_name_for
from bench.loadtest.report import percentile
from devtools.caller import Caller, CallerError, caller_token
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

    def figures(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "row": self.row,
            "executor": self.executor,
            "concurrency": self.concurrency,
            "calls": len(self.first_audio_ms) + self.lost,
            "lost_calls": self.lost,
            "greeting_sources": self.greeting_sources,
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
        **extra,
    }


async def start_worker(module: str, env: dict[str, str], log: IO[str], log_path: Path) -> asyncio.subprocess.Process:
    worker = await asyncio.create_subprocess_exec(
        sys.executable, "-m", module, "start", cwd=REPO, env=env, stdout=log, stderr=log, start_new_session=True
    )
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


async def one_call(
    livekit: LiveKitServer, lk: api.LiveKitAPI, agent_id: str, room: str, *, greeting_only: bool = False
) -> tuple[float, float]:
    """One call; (first_audio_ms, turn_ms). ``greeting_only``: hang up once the greeting is heard."""
    caller = Caller("caller")
    try:
        await caller.join(livekit.url, caller_token(livekit.api_key, livekit.api_secret, room, "caller"))
        started = time.monotonic()
        dispatch = asyncio.ensure_future(dispatch_agent(lk, room, agent_id, agent_name=AGENT_NAME))
        try:
            heard = await caller.first_agent_audio(CALL_SECONDS)
        finally:
            await dispatch  # raises if no agent came
        if greeting_only:
            return (heard - started) * 1000, float("nan")
        await caller.agent_quiet(CALL_SECONDS)
        ended = await caller.say(QUESTION)
        reply = await caller.agent_audio_after(ended, CALL_SECONDS)
        return (heard - started) * 1000, (reply - ended) * 1000
    finally:
        await caller.hang_up()


async def run_calls(
    livekit: LiveKitServer, agent_ids: list[str], row: AudioRow, calls: int, tag: str, warm: bool
) -> None:
    async with api.LiveKitAPI(livekit.http_url, livekit.api_key, livekit.api_secret) as lk:
        if warm:  # every agent's version loaded and its greeting cached before the measured calls
            for index, agent_id in enumerate(agent_ids):
                with contextlib.suppress(DispatchError, CallerError):
                    room = room_name_for(agent_id, f"{tag}-warm-{index}")
                    await one_call(livekit, lk, agent_id, room, greeting_only=True)
        slots = asyncio.Semaphore(row.concurrency)

        async def call(n: int) -> None:
            agent_id = agent_ids[n % len(agent_ids)]
            async with slots:
                try:
                    first, turn = await one_call(livekit, lk, agent_id, room_name_for(agent_id, f"{tag}-{n}"))
                except (DispatchError, CallerError) as exc:
                    row.lost += 1
                    print(f"\naudio call {tag}-{n} lost: {type(exc).__name__}: {exc}", file=sys.stderr)
                    return
                row.first_audio_ms.append(first)
                row.turn_ms.append(turn)

        await asyncio.gather(*(call(n) for n in range(calls)))


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
) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    plan: list[tuple[str, str]] = [
        (row, executor) for row in rows for executor in (executors if row != "seed" else ["default"])
    ]
    for row_name, executor in plan:
        for concurrency in concurrencies:
            convex.reset(data=True)
            standin.reset()
            tag = f"{row_name}-{executor}-c{concurrency}"
            extra = {} if row_name == "seed" else {"AGENT_EXECUTOR": executor}
            if row_name == "tts":
                extra["AGENT_GREETING_CACHE"] = "false"
            env = worker_env(livekit, convex, standin, **extra)
            module = "bench.stock_worker" if row_name == "seed" else "agent"
            log_path = log_dir / f"worker-{tag}.log"
            row = AudioRow(row_name, executor, concurrency)
            with log_path.open("w") as log:
                worker = await start_worker(module, env, log, log_path)
                try:
                    await run_calls(livekit, agent_ids, row, calls, tag, warm=row_name == "cache")
                finally:
                    await stop_worker(worker)
            row.greeting_sources = greeting_sources(log_path)
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
        f"p99 {ms(f['turn_ms_p99'])}"
    )
