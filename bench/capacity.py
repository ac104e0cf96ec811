"""``python -m bench.capacity``: how many talking calls one host carries.

Each step holds ``calls`` concurrent talking calls on one worker started by its real
command (``python -m agent start``), with the production session against the OpenAI
stand-in (its documented delays). Every call greets; then its caller (a process of its
own, ``devtools.caller --serve``) waits for the agent to finish, pauses, speaks a phrase
(espeak-ng, real time), hears the reply, and repeats for ``--seconds``. Per step:

- ``lost_calls``: calls with no agent, or whose caller stopped hearing it;
- ``turn_ms`` p50/p95: the end of the caller's phrase -> the reply's first frame above
  the caller's level; ``first_audio_ms`` p95: dispatch -> the greeting's first frame;
- ``audio_gaps`` / ``longest_gap_ms``: stalls over 100 ms in the agent audio the caller
  receives, while the agent speaks (no frame arrived: a stalled receive path; a sender
  that runs dry sends silence instead, which shows in the loop lag below);
- ``worker_cpu_pct``: the worker's process tree, % of one core, over the window in which
  every call talks; ``cpu_seconds_per_call_minute``; ``callers_cpu_pct`` apart;
- ``pss_mb`` (the tree's proportional set size, the most seen in the window) and
  ``pss_per_call_mb``: (``pss_mb`` - the worker's main process idle) / calls, so under
  PROCESS a job process (one per call) counts as the call's;
- ``loop_lag_p99_ms``: the worst job loop's p99 lag (``job_ended``'s ``loopLagP99Ms``).

``capacity`` is the largest step with no lost call, ``turn_ms`` p95 within the 1-call
step's p95 + 200 ms and no gap over 200 ms; ``calls_per_core`` is it over the worker's
CPUs. ``--worker-cpus 0`` pins the worker to CPU 0 and everything else (callers,
livekit-server, the stand-in, Convex) to the others, so a step measures the worker's cores
rather than the callers' CPU. ``--baseline`` runs the same steps against
``bench/stock_worker.py``. ``--burst`` sends 2 x capacity calls (greeting and one turn) at
once through ``dispatch_agent`` to a worker on its defaults; ``--soak N`` sends N such
calls through one worker at the capacity and samples its RSS, PSS, open files, threads
and asyncio tasks (the worker's ``agent_asyncio_tasks`` gauge) every 100 calls, with the
growth per 100 calls fitted after the first 200. ``--capacity N`` skips the steps.

    .venv/bin/python -m bench.capacity --executor thread --worker-cpus 0 --calls 1,2,4,6,8 --baseline
    .venv/bin/python -m bench.capacity --executor thread --worker-cpus 0 --capacity 6 --burst --soak 1000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx
from livekit import api

from agent.admission.targeting import room_name_for
from agent.dispatch import DispatchError, dispatch_agent
from bench.loadtest.audio import AGENT_NAME, CallerBot, start_worker, stop_worker, with_greetings, worker_env
from bench.loadtest.report import percentile
from bench.loadtest.workload import Workload, seed_agents
from devtools.caller import caller_token
from devtools.openai_standin.config import DEFAULT_LLM_TTFT_MS, DEFAULT_STT_DELAY_MS, DEFAULT_TTS_TTFB_MS
from devtools.processes import (
    LiveKitServer,
    LocalConvex,
    OpenAIStandin,
    free_port,
    start_livekit,
    start_local_convex,
    start_openai_standin,
)
from services.store.file import local_backend_id

AGENTS = 4
CALL_WITHIN = 60.0
"""Seconds a caller waits for any one step (greeting, reply) before it calls the call lost."""
TURN_SLACK_MS = 200.0
GAP_LIMIT_MS = 200.0
STAGGER_SECONDS = 0.25
"""Calls of a step start this far apart: a step measures calls held, not a start burst."""
SOAK_MIN_CALLS = 1000
SOAK_GROWTH_AFTER = 200
"""The soak's growth is fitted over the samples after this many calls (caches and pools
fill first)."""
SOAK_QUESTION = "What are your opening hours?"
CLK_TCK = os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------------------- /proc readings


def process_tree(root: int) -> list[int]:
    """``root`` and its descendants (from ``/proc/*/stat``)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU of ``pids``, and of their children already waited for."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += sum(int(v) for v in fields[11:15])  # utime stime cutime cstime
    return total / CLK_TCK


def memory_kb(pids: list[int], key: str) -> int:
    """A ``smaps_rollup`` figure (``Pss:``, ``Rss:``) summed over ``pids``."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith(key):
                    total += int(line.split()[1])
    return total


def open_fds(pids: list[int]) -> int:
    return sum(len(os.listdir(f"/proc/{pid}/fd")) for pid in pids if Path(f"/proc/{pid}/fd").exists())


def threads(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, ValueError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("Threads:"):
                    total += int(line.split()[1])
    return total


# ---------------------------------------------------------------------------- one call


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


# ---------------------------------------------------------------------------- sampling


class TreeSampler:
    """CPU and PSS of the worker's and the callers' process trees, once a second."""

    def __init__(self, worker_pid: int, caller_pids: list[int]) -> None:
        self.worker_pid, self.caller_pids = worker_pid, caller_pids
        self.samples: list[tuple[float, float, float, float]] = []
        """(monotonic, worker CPU s, callers CPU s, worker PSS MB)"""
        self._task: asyncio.Task[None] | None = None

    def sample(self) -> tuple[float, float, float, float]:
        tree = process_tree(self.worker_pid)
        callers = [pid for root in self.caller_pids for pid in process_tree(root)]
        return (time.monotonic(), cpu_seconds(tree), cpu_seconds(callers), memory_kb(tree, "Pss:") / 1024)

    async def run(self) -> None:
        while True:
            self.samples.append(await asyncio.to_thread(self.sample))
            await asyncio.sleep(1.0)

    def start(self) -> None:
        self._task = asyncio.ensure_future(self.run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def window(self, start: float, end: float) -> tuple[float, float, float, float] | None:
        """(seconds, worker CPU s, callers CPU s, max PSS MB) between the samples nearest
        inside [start, end]."""
        inside = [s for s in self.samples if start <= s[0] <= end]
        if len(inside) < 2:
            return None
        first, last = inside[0], inside[-1]
        return (last[0] - first[0], last[1] - first[1], last[2] - first[2], max(s[3] for s in inside))


# ---------------------------------------------------------------------------- a step


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


async def run_step(
    services: Services,
    *,
    module: str,
    executor: str,
    calls: int,
    seconds: float,
    pause_seconds: float,
    extra_env: dict[str, str],
) -> dict[str, Any]:
    tag = f"{'stock' if module != 'agent' else executor}-c{calls}"
    services.convex.reset(data=True)
    services.standin.reset()
    env_extra = dict(extra_env)
    if module == "agent":
        env_extra |= {"AGENT_EXECUTOR": executor, "AGENT_MAX_JOBS": str(calls)}
    env = worker_env(services.livekit, services.convex, services.standin, **env_extra)
    log_path = services.log_dir / f"worker-{tag}.log"
    bots = [await CallerBot.start() for _ in range(calls)]
    results: list[TalkResult] = []
    try:
        with log_path.open("w") as log:
            worker = await start_worker(module, env, log, log_path, cpus=services.worker_cpus)
            try:
                async with api.LiveKitAPI(
                    services.livekit.http_url, services.livekit.api_key, services.livekit.api_secret
                ) as lk:
                    warmed = await warm(bots, services, lk, tag)
                    await jobs_gone(worker.pid, module, log_path, warmed)
                    idle_main_mb = memory_kb([worker.pid], "Pss:") / 1024
                    sampler = TreeSampler(worker.pid, [b.process.pid for b in bots])
                    sampler.start()
                    rooms = [room_name_for(services.agent_ids[n % AGENTS], f"{tag}-{n}") for n in range(calls)]

                    async def one(n: int) -> TalkResult:
                        await asyncio.sleep(n * STAGGER_SECONDS)  # arrivals, spread on purpose
                        agent_id = services.agent_ids[n % AGENTS]
                        return await talk(
                            bots[n], services.livekit, lk, agent_id, rooms[n],
                            talk_seconds=seconds, pause_seconds=pause_seconds,
                        )  # fmt: skip

                    results = list(await asyncio.gather(*(one(n) for n in range(calls))))
                    await sampler.stop()
            finally:
                await stop_worker(worker)
    finally:
        await asyncio.gather(*(bot.stop() for bot in bots))
    return step_figures(calls, results, sampler, idle_main_mb, job_lags(log_path, set(rooms)))


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


def step_figures(
    calls: int, results: list[TalkResult], sampler: TreeSampler, idle_main_mb: float, lags: list[float]
) -> dict[str, Any]:
    ok = [r for r in results if not r.error]
    turns = [t for r in ok for t in r.turns_ms]
    firsts = [r.first_audio_ms for r in ok if r.first_audio_ms is not None]
    # The window in which every call talks: the last greeting -> the first call's end.
    greeted = [r.greeted_at for r in results if r.greeted_at is not None]
    ended = [r.ended_at for r in results if r.ended_at is not None]
    window = sampler.window(max(greeted), min(ended)) if greeted and ended else None
    out: dict[str, Any] = {
        "calls": calls,
        "lost_calls": len(results) - len(ok),
        "errors": sorted({r.error[:120] for r in results if r.error}),
        "turns": len(turns),
        "turn_ms_p50": _round(percentile(turns, 0.5)),
        "turn_ms_p95": _round(percentile(turns, 0.95)),
        "first_audio_ms_p95": _round(percentile(firsts, 0.95)),
        "audio_gaps": sum(r.gaps for r in results),
        "longest_gap_ms": round(max((r.longest_gap_ms for r in results), default=0.0), 1),
        "loop_lag_p99_ms": max(lags) if lags else None,
        "window_seconds": None,
        "worker_cpu_pct": None,
        "cpu_seconds_per_call_minute": None,
        "callers_cpu_pct": None,
        "pss_mb": None,
        "pss_per_call_mb": None,
    }
    if window is not None and window[0] > 0:
        seconds, worker_cpu, callers_cpu, pss = window
        out |= {
            "window_seconds": round(seconds, 1),
            "worker_cpu_pct": round(100 * worker_cpu / seconds, 1),
            "cpu_seconds_per_call_minute": round(worker_cpu / (calls * seconds / 60), 2),
            "callers_cpu_pct": round(100 * callers_cpu / seconds, 1),
            "pss_mb": round(pss, 1),
            "pss_per_call_mb": round((pss - idle_main_mb) / calls, 1),
        }
    return out


def _round(value: float) -> float | None:
    return None if math.isnan(value) else round(value, 1)


def capacity_of(steps: list[dict[str, Any]]) -> int:
    """The largest step with no lost call, turn p95 within the smallest step's p95 +
    ``TURN_SLACK_MS``, and no gap over ``GAP_LIMIT_MS``; 0 if none."""
    if not steps:
        return 0
    reference = min(steps, key=lambda s: s["calls"])["turn_ms_p95"]
    best = 0
    for step in steps:
        p95 = step["turn_ms_p95"]
        if (
            step["lost_calls"] == 0
            and p95 is not None
            and reference is not None
            and p95 <= reference + TURN_SLACK_MS
            and step["longest_gap_ms"] <= GAP_LIMIT_MS
        ):
            best = max(best, step["calls"])
    return best


# ---------------------------------------------------------------------------- soak and burst


def asyncio_tasks(metrics_url: str) -> float | None:
    """The worker's ``agent_asyncio_tasks`` gauge (see ``agent.process_gauges``)."""
    with contextlib.suppress(httpx.HTTPError):
        for line in httpx.get(metrics_url, timeout=5).text.splitlines():
            if line.startswith("agent_asyncio_tasks "):
                return float(line.split()[1])
    return None


def slope_per_100(points: list[tuple[int, float]]) -> float | None:
    """Least-squares growth per 100 calls of (calls, value) points."""
    if len(points) < 2:
        return None
    xs = [float(x) for x, _ in points]
    ys = [y for _, y in points]
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    denominator = sum((x - mean_x) ** 2 for x in xs)
    if denominator == 0:
        return None
    return round(100 * sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / denominator, 3)


SOAK_FIGURES = ("rss_mb", "pss_mb", "fds", "threads", "asyncio_tasks")


def soak_sample(pid: int, calls: int, metrics_url: str) -> dict[str, Any]:
    """What the worker's tree holds after ``calls`` calls."""
    tree = process_tree(pid)
    return {
        "calls": calls,
        "rss_mb": round(memory_kb(tree, "Rss:") / 1024, 1),
        "pss_mb": round(memory_kb(tree, "Pss:") / 1024, 1),
        "fds": open_fds(tree),
        "threads": threads(tree),
        "asyncio_tasks": asyncio_tasks(metrics_url),
    }


async def soak_calls(services: Services, lk: api.LiveKitAPI, bots: list[CallerBot], calls: int, on_call: Any) -> None:
    """``calls`` short calls, one per free bot at a time; ``on_call(result)`` after each."""
    free: asyncio.Queue[CallerBot] = asyncio.Queue()
    for bot in bots:
        free.put_nowait(bot)

    async def one(n: int) -> None:
        agent_id = services.agent_ids[n % AGENTS]
        bot = await free.get()
        try:
            room = room_name_for(agent_id, f"soak-{n}")
            result = await talk(
                bot, services.livekit, lk, agent_id, room,
                talk_seconds=0, pause_seconds=0, question=SOAK_QUESTION,
            )  # fmt: skip
        finally:
            free.put_nowait(bot)
        await on_call(result)

    await asyncio.gather(*(one(n) for n in range(calls)))


async def run_soak(
    services: Services, *, executor: str, calls: int, concurrency: int, every: int, extra_env: dict[str, str]
) -> dict[str, Any]:
    """``calls`` short calls (greeting and one turn) through one worker, ``concurrency``
    at a time; the worker sampled before the first and after every ``every`` calls."""
    services.convex.reset(data=True)
    services.standin.reset()
    port = free_port()
    env = worker_env(
        services.livekit, services.convex, services.standin,
        **extra_env, AGENT_EXECUTOR=executor, AGENT_MAX_JOBS=str(concurrency), PROMETHEUS_PORT=str(port),
    )  # fmt: skip
    log_path = services.log_dir / f"worker-soak-{executor}.log"
    metrics_url = f"http://127.0.0.1:{port}/metrics"
    samples: list[dict[str, Any]] = []
    lost: list[str] = []
    bots = [await CallerBot.start() for _ in range(concurrency)]
    try:
        with log_path.open("w") as log:
            worker = await start_worker("agent", env, log, log_path, cpus=services.worker_cpus)

            done = 0

            async def on_call(result: TalkResult) -> None:
                nonlocal done
                done += 1
                if result.error:
                    lost.append(result.error[:120])
                if done % every == 0:
                    await asyncio.sleep(2.0)  # the call's job ends after its caller leaves
                    samples.append(await asyncio.to_thread(soak_sample, worker.pid, done, metrics_url))
                    print(f"  soak {soak_line(samples[-1])}", flush=True)

            try:
                async with api.LiveKitAPI(
                    services.livekit.http_url, services.livekit.api_key, services.livekit.api_secret
                ) as lk:
                    warmed = await warm(bots, services, lk, "soak")
                    await jobs_gone(worker.pid, "agent", log_path, warmed)
                    samples.append(await asyncio.to_thread(soak_sample, worker.pid, 0, metrics_url))
                    await soak_calls(services, lk, bots, calls, on_call)
            finally:
                await stop_worker(worker)
    finally:
        await asyncio.gather(*(bot.stop() for bot in bots))
    after = [s for s in samples if s["calls"] >= min(SOAK_GROWTH_AFTER, calls // 2)]
    slopes = {
        name: slope_per_100([(s["calls"], float(s[name])) for s in after if s[name] is not None])
        for name in SOAK_FIGURES
    }
    return {
        "executor": executor,
        "calls": calls,
        "concurrency": concurrency,
        "lost_calls": len(lost),
        "errors": sorted(set(lost)),
        "samples": samples,
        "growth_per_100_calls": slopes,
    }


def soak_line(s: dict[str, Any]) -> str:
    return " ".join(f"{name} {s[name]}" for name in ("calls", *SOAK_FIGURES))


async def burst_call(services: Services, lk: api.LiveKitAPI, bot: CallerBot, n: int) -> TalkResult:
    agent_id = services.agent_ids[n % AGENTS]
    room = room_name_for(agent_id, f"burst-{n}")
    return await talk(
        bot, services.livekit, lk, agent_id, room, talk_seconds=0, pause_seconds=0, question=SOAK_QUESTION
    )


async def run_burst(services: Services, *, executor: str, calls: int, extra_env: dict[str, str]) -> dict[str, Any]:
    """``calls`` calls (greeting and one turn) started at once through ``dispatch_agent``
    against a worker on its defaults (``AGENT_MAX_JOBS`` and CPU shedding unset)."""
    services.convex.reset(data=True)
    services.standin.reset()
    env = worker_env(services.livekit, services.convex, services.standin, **extra_env, AGENT_EXECUTOR=executor)
    env.pop("AGENT_CPU_SATURATION", None)  # the default: the load the worker reports, as shipped
    log_path = services.log_dir / f"worker-burst-{executor}.log"
    bots = [await CallerBot.start() for _ in range(calls)]
    try:
        with log_path.open("w") as log:
            worker = await start_worker("agent", env, log, log_path, cpus=services.worker_cpus)
            try:
                async with api.LiveKitAPI(
                    services.livekit.http_url, services.livekit.api_key, services.livekit.api_secret
                ) as lk:
                    await warm(bots[:AGENTS], services, lk, "burst")
                    results = await asyncio.gather(*(burst_call(services, lk, bot, n) for n, bot in enumerate(bots)))
            finally:
                await stop_worker(worker)
    finally:
        await asyncio.gather(*(bot.stop() for bot in bots))
    firsts = [r.first_audio_ms for r in results if not r.error and r.first_audio_ms is not None]
    return {
        "executor": executor,
        "calls": calls,
        "lost_calls": sum(1 for r in results if r.error),
        "errors": sorted({r.error[:120] for r in results if r.error}),
        "first_audio_ms_p50": _round(percentile(firsts, 0.5)),
        "first_audio_ms_p95": _round(percentile(firsts, 0.95)),
    }


# ---------------------------------------------------------------------------- the command


def step_line(s: dict[str, Any]) -> str:
    def v(value: Any, width: int = 7) -> str:
        return f"{value:>{width}}" if value is not None else f"{'n/a':>{width}}"

    return (
        f"  calls {s['calls']:3}  lost {s['lost_calls']:2}  turns {s['turns']:4}  turn p50 {v(s['turn_ms_p50'])} "
        f"p95 {v(s['turn_ms_p95'])}  first audio p95 {v(s['first_audio_ms_p95'])}  gaps {s['audio_gaps']:3} "
        f"longest {v(s['longest_gap_ms'], 6)}  cpu% {v(s['worker_cpu_pct'], 6)} "
        f"(callers {v(s['callers_cpu_pct'], 6)})  "
        f"cpu s/call-min {v(s['cpu_seconds_per_call_minute'], 5)}  pss {v(s['pss_mb'], 7)} "
        f"/call {v(s['pss_per_call_mb'], 6)}  lag p99 {v(s['loop_lag_p99_ms'], 6)}"
    )


async def run_steps(
    services: Services, *, module: str, executor: str, steps: list[int], args: argparse.Namespace, label: str
) -> dict[str, Any]:
    print(f"{label}:", flush=True)
    figures = []
    for calls in steps:
        step = await run_step(
            services, module=module, executor=executor, calls=calls, seconds=args.seconds,
            pause_seconds=args.pause_seconds, extra_env=dict(args.worker_env),
        )  # fmt: skip
        print(step_line(step), flush=True)
        figures.append(step)
    capacity = capacity_of(figures)
    cpus = len(services.worker_cpus) if services.worker_cpus else os.cpu_count() or 1
    summary = {
        "worker": module,
        "executor": executor,
        "steps": figures,
        "capacity": capacity,
        "calls_per_core": round(capacity / cpus, 2),
    }
    print(f"  capacity {capacity} calls ({summary['calls_per_core']} per core, {cpus} worker CPUs)", flush=True)
    return summary


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--executor", choices=("thread", "process"), default="thread")
    parser.add_argument("--calls", default="1,2,4,8", help="the steps: concurrent calls, comma-separated")
    parser.add_argument("--seconds", type=float, default=60.0, help="seconds each call of a step talks")
    parser.add_argument("--pause-seconds", type=float, default=1.0, help="the caller's pause before each phrase")
    parser.add_argument("--baseline", action="store_true", help="the same steps against bench/stock_worker.py")
    parser.add_argument("--soak", type=int, default=0, help="N calls (at least 1000) through one worker at capacity")
    parser.add_argument("--soak-sample-every", type=int, default=100, help="calls between two soak samples")
    parser.add_argument("--soak-concurrency", type=int, help="the soak's concurrency (default: the measured capacity)")
    parser.add_argument("--burst", action="store_true", help="2 x capacity calls at once, worker on its defaults")
    parser.add_argument(
        "--worker-cpus",
        help="pin the worker to these CPUs (e.g. 0) and everything else (callers, livekit-server, "
        "the stand-in, Convex) to the others: a step then measures the worker's cores alone",
    )
    parser.add_argument(
        "--capacity",
        type=int,
        help="a capacity measured before: skip the steps, size --soak and --burst from it",
    )
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--worker-log-dir", type=Path, help="keep the workers' logs here")
    parser.add_argument(
        "--worker-env", action="append", default=[], type=lambda item: tuple(item.split("=", 1)),
        help="a setting for this worker (repeatable), e.g. AGENT_CONNECT_CONCURRENCY=2",
    )  # fmt: skip
    args = parser.parse_args(argv)
    try:
        args.steps = sorted({int(part) for part in args.calls.split(",") if part.strip()})
    except ValueError:
        parser.error(f"--calls takes comma-separated numbers, got {args.calls!r}")
    if not args.steps or args.steps[0] < 1:
        parser.error("--calls needs at least one step of 1 call or more")
    if args.capacity is not None and (args.capacity < 1 or args.baseline):
        parser.error("--capacity takes a number of calls (1 or more), and skips the steps --baseline compares")
    if 0 < args.soak < SOAK_MIN_CALLS:
        print(f"--soak {args.soak}: under {SOAK_MIN_CALLS} calls a slope is no verdict on leaks", file=sys.stderr)
    if args.soak_sample_every < 1:
        parser.error("--soak-sample-every takes a positive number of calls")
    args.cpu_split = None
    if args.worker_cpus:
        try:
            worker = {int(part) for part in args.worker_cpus.split(",") if part.strip()}
        except ValueError:
            parser.error(f"--worker-cpus takes comma-separated CPU numbers, got {args.worker_cpus!r}")
        others = os.sched_getaffinity(0) - worker
        if not worker or not worker < os.sched_getaffinity(0) or not others:
            parser.error(
                f"--worker-cpus must name some but not all of this host's CPUs {sorted(os.sched_getaffinity(0))}"
            )
        args.cpu_split = (worker, others)
    if any(len(item) != 2 for item in args.worker_env):
        parser.error("--worker-env takes NAME=VALUE")
    return args


async def run(args: argparse.Namespace) -> dict[str, Any]:
    docs = with_greetings(seed_agents(Workload(agents=AGENTS)))
    worker_cpus = None
    if args.cpu_split is not None:
        worker_cpus, others = args.cpu_split
        os.sched_setaffinity(0, others)  # inherited by every service and caller started below
    with tempfile.TemporaryDirectory(prefix="capacity-") as tmp, contextlib.ExitStack() as stack:
        seed_file = Path(tmp) / "agents.json"
        seed_file.write_text(json.dumps({"agents": docs}))
        convex = start_local_convex(seed=seed_file)
        stack.callback(convex.stop)
        livekit = start_livekit()
        stack.callback(livekit.stop)
        standin = start_openai_standin()
        stack.callback(standin.stop)
        log_dir = args.worker_log_dir or Path(tmp)
        log_dir.mkdir(parents=True, exist_ok=True)
        agent_ids = [local_backend_id(i) for i in range(AGENTS)]
        services = Services(livekit, convex, standin, agent_ids, log_dir, worker_cpus)
        delays = {
            "stt_delay_ms": DEFAULT_STT_DELAY_MS,
            "llm_ttft_ms": DEFAULT_LLM_TTFT_MS,
            "tts_ttfb_ms": DEFAULT_TTS_TTFB_MS,
        }
        print(f"capacity: {os.cpu_count()} CPUs; stand-in delays (ms) {delays}; {args.seconds:g} s/step", flush=True)
        out: dict[str, Any] = {
            "cpus": os.cpu_count(),
            "worker_cpus": sorted(worker_cpus) if worker_cpus else None,
            "standin_delays_ms": delays,
            "seconds": args.seconds,
        }
        if args.capacity is not None:
            out |= {"worker": "agent", "executor": args.executor, "steps": [], "capacity": args.capacity}
        else:
            out |= await run_steps(
                services, module="agent", executor=args.executor, steps=args.steps, args=args,
                label=f"this worker ({args.executor})",
            )  # fmt: skip
        if args.baseline:
            out["baseline"] = await run_steps(
                services, module="bench.stock_worker", executor="default", steps=args.steps, args=args,
                label="stock worker (livekit's defaults)",
            )  # fmt: skip
        capacity = int(out["capacity"]) or 1
        if args.burst:
            out["burst"] = await run_burst(
                services, executor=args.executor, calls=2 * capacity, extra_env=dict(args.worker_env)
            )
            print(f"burst of {2 * capacity}: lost {out['burst']['lost_calls']}; {out['burst']}", flush=True)
        if args.soak:
            out["soak"] = await run_soak(
                services, executor=args.executor, calls=args.soak,
                concurrency=args.soak_concurrency or capacity, every=args.soak_sample_every,
                extra_env=dict(args.worker_env),
            )  # fmt: skip
            print(f"soak: growth per 100 calls after the first 200: {out['soak']['growth_per_100_calls']}", flush=True)
        return out


def write_json(path: Path, figures: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(figures, indent=2) + "\n")


def main(argv: list[str] | None = None, out: IO[str] = sys.stdout) -> int:
    args = parse_args(argv)
    figures = asyncio.run(run(args))
    if args.json:
        write_json(args.json, figures)
        print(f"wrote {args.json}", file=out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
