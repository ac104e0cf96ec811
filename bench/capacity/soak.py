"""The soak (N short calls through one worker, sampled every so many) and the 2x burst."""

from __future__ import annotations

import asyncio
import contextlib
import statistics
from typing import Any

import httpx
from livekit import api

from agent.admission.targeting import room_name_for
from bench.capacity.calls import AGENTS, QUESTION, Services, TalkResult, jobs_gone, talk, warm, worker_with_callers
from bench.capacity.proc import memory_kb, open_fds, process_tree, threads
from bench.capacity.steps import rounded
from bench.loadtest.audio import CallerBot, worker_env
from bench.loadtest.report import percentile
from devtools.processes import (
    free_port,
)

SOAK_MIN_CALLS = 1000
SOAK_GROWTH_AFTER = 200
"""The soak's growth is fitted over the samples after this many calls (caches and pools
fill first)."""


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


def residual_sd(points: list[tuple[int, float]]) -> float | None:
    """The spread of (calls, value) points around their least-squares line: the noise a
    slope has to stand out from (samples taken while other calls are in flight vary with
    where those calls are)."""
    slope = slope_per_100(points)
    if slope is None or len(points) < 3:
        return None
    xs = [float(x) for x, _ in points]
    ys = [y for _, y in points]
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    residuals = [y - (mean_y + slope / 100 * (x - mean_x)) for x, y in zip(xs, ys, strict=True)]
    return round(statistics.stdev(residuals), 3)


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
                talk_seconds=0, pause_seconds=0, question=QUESTION,
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
    port = free_port()
    env = worker_env(
        services.livekit, services.convex, services.standin,
        **extra_env, AGENT_EXECUTOR=executor, AGENT_MAX_JOBS=str(concurrency), PROMETHEUS_PORT=str(port),
    )  # fmt: skip
    log_path = services.log_dir / f"worker-soak-{executor}.log"
    metrics_url = f"http://127.0.0.1:{port}/metrics"
    samples: list[dict[str, Any]] = []
    lost: list[str] = []
    async with worker_with_callers(services, "agent", env, log_path, concurrency) as (worker, bots, lk):
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

        warmed = await warm(bots, services, lk, "soak")
        await jobs_gone(worker.pid, "agent", log_path, warmed)
        samples.append(await asyncio.to_thread(soak_sample, worker.pid, 0, metrics_url))
        await soak_calls(services, lk, bots, calls, on_call)
    after = [s for s in samples if s["calls"] >= min(SOAK_GROWTH_AFTER, calls // 2)]
    points = {name: [(s["calls"], float(s[name])) for s in after if s[name] is not None] for name in SOAK_FIGURES}
    slopes = {name: slope_per_100(series) for name, series in points.items()}
    noise = {name: residual_sd(series) for name, series in points.items()}
    return {
        "executor": executor,
        "calls": calls,
        "concurrency": concurrency,
        "lost_calls": len(lost),
        "errors": sorted(set(lost)),
        "samples": samples,
        "growth_per_100_calls": slopes,
        "residual_sd": noise,
    }


def soak_line(s: dict[str, Any]) -> str:
    return " ".join(f"{name} {s[name]}" for name in ("calls", *SOAK_FIGURES))


async def burst_call(services: Services, lk: api.LiveKitAPI, bot: CallerBot, n: int) -> TalkResult:
    agent_id = services.agent_ids[n % AGENTS]
    room = room_name_for(agent_id, f"burst-{n}")
    return await talk(bot, services.livekit, lk, agent_id, room, talk_seconds=0, pause_seconds=0, question=QUESTION)


async def run_burst(services: Services, *, executor: str, calls: int, extra_env: dict[str, str]) -> dict[str, Any]:
    """``calls`` calls (greeting and one turn) started at once through ``dispatch_agent``
    against a worker on its defaults (``AGENT_MAX_JOBS`` and CPU shedding unset)."""
    env = worker_env(services.livekit, services.convex, services.standin, **extra_env, AGENT_EXECUTOR=executor)
    env.pop("AGENT_CPU_SATURATION", None)  # the default: the load the worker reports, as shipped
    log_path = services.log_dir / f"worker-burst-{executor}.log"
    async with worker_with_callers(services, "agent", env, log_path, calls) as (_worker, bots, lk):
        await warm(bots[:AGENTS], services, lk, "burst")
        results = await asyncio.gather(*(burst_call(services, lk, bot, n) for n, bot in enumerate(bots)))
    firsts = [r.first_audio_ms for r in results if not r.error and r.first_audio_ms is not None]
    return {
        "executor": executor,
        "calls": calls,
        "lost_calls": sum(1 for r in results if r.error),
        "errors": sorted({r.error[:120] for r in results if r.error}),
        "first_audio_ms_p50": rounded(percentile(firsts, 0.5)),
        "first_audio_ms_p95": rounded(percentile(firsts, 0.95)),
    }
