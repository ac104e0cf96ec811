"""A step: ``calls`` talking calls held on one worker; its figures and the capacity verdict."""

from __future__ import annotations

import argparse
import asyncio
import math
import os
from typing import Any

from agent.admission.targeting import room_name_for
from bench.capacity.calls import AGENTS, Services, TalkResult, job_lags, jobs_gone, talk, warm, worker_with_callers
from bench.capacity.proc import TreeSampler, memory_kb
from bench.loadtest.audio import worker_env
from bench.loadtest.report import percentile

TURN_SLACK_MS = 200.0
GAP_LIMIT_MS = 200.0
STAGGER_SECONDS = 0.25


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
    env_extra = dict(extra_env)
    if module == "agent":
        env_extra |= {"AGENT_EXECUTOR": executor, "AGENT_MAX_JOBS": str(calls)}
    env = worker_env(services.livekit, services.convex, services.standin, **env_extra)
    log_path = services.log_dir / f"worker-{tag}.log"
    async with worker_with_callers(services, module, env, log_path, calls) as (worker, bots, lk):
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
    return step_figures(calls, results, sampler, idle_main_mb, job_lags(log_path, set(rooms)))


def step_figures(
    calls: int, results: list[TalkResult], sampler: TreeSampler, idle_main_mb: float, lags: list[float]
) -> dict[str, Any]:
    ok = [r for r in results if not r.error]
    turns = [t for r in ok for t in r.turns_ms]
    firsts = [r.first_audio_ms for r in ok if r.first_audio_ms is not None]
    # The window in which every call talks: the last greeting -> the first call's end (of
    # the calls kept: a lost call ends early and would leave no window to measure).
    greeted = [r.greeted_at for r in ok if r.greeted_at is not None]
    ended = [r.ended_at for r in ok if r.ended_at is not None]
    window = sampler.window(max(greeted), min(ended)) if greeted and ended else None
    out: dict[str, Any] = {
        "calls": calls,
        "lost_calls": len(results) - len(ok),
        "errors": sorted({r.error[:120] for r in results if r.error}),
        "turns": len(turns),
        "turn_ms_p50": rounded(percentile(turns, 0.5)),
        "turn_ms_p95": rounded(percentile(turns, 0.95)),
        "first_audio_ms_p95": rounded(percentile(firsts, 0.95)),
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


def rounded(value: float) -> float | None:
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
