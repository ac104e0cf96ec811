"""``python -m bench.loadtest``: simulated joins, every strategy in one run.

    python -m bench.loadtest --agents 50 --zipf 1.1 --joins 500 --concurrency 8 \\
        --edits-per-minute 30 --deletes-per-minute 0 --latency-ms 100 --seed 7 \\
        --json out.json --plot out.png

Starts the local Convex backend (seeded with ``--agents`` agents, answering after
``--latency-ms``) and, for the Redis strategy, a redis-server; restores the data before
each strategy; edits (and with ``--deletes-per-minute`` deletes) agents in Convex while
joins run; checks every served prompt against the versions that existed (a prompt served
for an agent deleted longer ago than the freshness bound is wrong). SIGTERM and Ctrl-C
stop every service it started before it exits.

By default the joins run in a closed loop: ``--concurrency`` callers, each starting its
next join when its last one ends, so a strategy that serves joins more slowly also runs
longer. ``--rate R`` makes the joins arrive open-loop, R per second (Poisson, seeded),
queued for ``--concurrency`` slots: every strategy that keeps up then runs for the same
time, which is how figures that follow the clock (the refresher's polls, the edits and
their reloads) compare per join between strategies.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.loadtest.audio import ROWS as AUDIO_ROWS
from bench.loadtest.audio import run_audio, with_greetings
from bench.loadtest.checker import VersionHistory, count_wrong
from bench.loadtest.deleter import Deleter
from bench.loadtest.report import PLOT_EXTRA_MISSING, Progress, percentile, plot, plot_available, table, write_json
from bench.loadtest.strategies import STRATEGIES, WORKER_STRATEGIES, Outcome, Target, run_strategy
from bench.loadtest.workload import Workload, arrival_offsets, edit_picker, join_plan, pick_agent, seed_agents
from devtools.fake_models import prompt_tag
from devtools.openai_standin.config import DEFAULT_LLM_TTFT_MS, DEFAULT_STT_DELAY_MS, DEFAULT_TTS_TTFB_MS
from devtools.processes import LocalConvex, start_livekit, start_local_convex, start_openai_standin, start_redis
from prompts import build_full_prompt
from services.store.file import local_backend_id


def parse_args(argv: list[str] | None = None) -> tuple[Workload, argparse.Namespace]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agents", type=int, default=50)
    parser.add_argument("--zipf", type=float, default=1.1, help="popularity exponent (0: uniform)")
    parser.add_argument("--joins", type=int, default=500, help="joins per strategy")
    parser.add_argument("--concurrency", type=int, default=8, help="joins served at once")
    parser.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="joins arriving per second (Poisson, seeded), queued for --concurrency slots; "
        "0 (default): closed loop, each slot starts its next join when the last ends",
    )
    parser.add_argument("--edits-per-minute", type=float, default=30.0)
    parser.add_argument(
        "--deletes-per-minute", type=float, default=0.0, help="agents deleted (agents:remove) while joins run"
    )
    parser.add_argument("--latency-ms", type=float, default=100.0, help="the local Convex backend's round trip")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--refresh-seconds", type=float, default=2.0, help="PROMPT_REFRESH_SECONDS for tiered")
    parser.add_argument("--legacy-fraction", type=float, default=0.0, help="share of agents without fullPrompt")
    parser.add_argument("--strategy", action="append", choices=STRATEGIES, help="run only these (repeatable)")
    parser.add_argument(
        "--mode",
        choices=("simulate", "livekit"),
        default="simulate",
        help="livekit: also dispatch each join of the worker strategies through a real livekit-server --dev",
    )
    parser.add_argument(
        "--simulation",
        action="store_true",
        help="livekit mode: start the worker with --simulation (livekit-agents' load shedding off)",
    )
    parser.add_argument("--max-jobs", type=int, help="livekit mode: the worker's AGENT_MAX_JOBS (default: its own)")
    parser.add_argument("--worker-log-dir", type=Path, help="livekit mode: keep the worker logs there")
    parser.add_argument(
        "--audio",
        action="store_true",
        help="livekit mode: talking calls on the production session against the OpenAI stand-in "
        "(first_audio_ms, turn_ms per call; rows cache, tts, seed); --joins calls per row",
    )
    parser.add_argument("--audio-concurrency", default="1,8", help="--audio: concurrent calls, comma-separated")
    parser.add_argument("--executors", default="thread,process", help="--audio: the worker's executors")
    parser.add_argument("--audio-rows", default=",".join(AUDIO_ROWS), help="--audio: rows to run (cache,tts,seed)")
    parser.add_argument(
        "--worker-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="--audio: a setting for this worker's rows (repeatable), e.g. AGENT_CONNECT_CONCURRENCY=8",
    )
    parser.add_argument(
        "--worker-cpus",
        help="--audio: pin the worker to these CPUs (e.g. 0) and the callers and services to the others",
    )
    parser.add_argument("--stt-delay-ms", type=float, help="--audio: the stand-in's STT delay (default: its own)")
    parser.add_argument("--llm-ttft-ms", type=float, help="--audio: the stand-in's LLM time to first token")
    parser.add_argument("--tts-ttfb-ms", type=float, help="--audio: the stand-in's TTS time to first byte")
    parser.add_argument("--json", type=Path, help="write the figures as JSON")
    parser.add_argument("--plot", type=Path, help="write the latency distribution of every strategy as PNG")
    args = parser.parse_args(argv)
    if args.agents < 1 or args.joins < 1 or args.concurrency < 1:
        parser.error("--agents, --joins and --concurrency must be at least 1")
    if args.rate < 0:
        parser.error("--rate must be 0 (closed loop) or more")
    if not 0 <= args.legacy_fraction <= 1:
        parser.error("--legacy-fraction must be between 0 and 1")
    workload = Workload(
        agents=args.agents,
        zipf=args.zipf,
        joins=args.joins,
        concurrency=args.concurrency,
        edits_per_minute=args.edits_per_minute,
        latency_ms=args.latency_ms,
        seed=args.seed,
        refresh_seconds=args.refresh_seconds,
        legacy_fraction=args.legacy_fraction,
        deletes_per_minute=args.deletes_per_minute,
        rate=args.rate,
    )
    return workload, args


class Editor:
    """Edits agents in Convex at the workload's rate and records every version."""

    def __init__(self, convex: LocalConvex, workload: Workload, docs: list[dict[str, Any]]) -> None:
        self._convex, self._workload = convex, workload
        self._docs = [dict(doc) for doc in docs]
        self.history = VersionHistory()
        for index, doc in enumerate(self._docs):
            self.history.add(
                local_backend_id(index), float("-inf"), doc["updatedAt"], prompt_tag(build_full_prompt(doc))
            )
        self.edits = 0

    async def run(self, stop: asyncio.Event) -> None:
        rate = self._workload.edits_per_minute / 60
        if rate <= 0:
            return
        rng = edit_picker(self._workload)
        headers = {"Authorization": f"Convex {self._convex.deploy_key}"}
        async with httpx.AsyncClient(base_url=self._convex.url, headers=headers, timeout=30) as client:
            while True:
                try:
                    await asyncio.wait_for(stop.wait(), rng.expovariate(rate))
                    return
                except TimeoutError:
                    pass
                index = pick_agent(rng, self._workload)
                agent_id = local_backend_id(index)
                text = f"{self._docs[index]['systemPrompt'].split(' Edit ')[0]} Edit {self.edits + 1}."
                body = {"path": "agents:update", "args": {"agentId": agent_id, "systemPrompt": text}}
                answer = (await client.post("/api/mutation", json=body)).json()
                if answer.get("status") != "success":
                    continue
                self.edits += 1
                self._docs[index] |= {"systemPrompt": text, "updatedAt": answer["value"]["updatedAt"]}
                tag = prompt_tag(build_full_prompt(self._docs[index]))
                self.history.add(agent_id, time.time(), self._docs[index]["updatedAt"], tag)


def summarize(
    workload: Workload, outcome: Outcome, stats: dict[str, Any], editor: Editor, deletes: int = 0
) -> dict[str, Any]:
    joins = len(outcome.served) + outcome.errors
    by_path = stats["byPath"]
    db_reads = int(stats["total"]) - int(by_path.get("agents:update", 0)) - int(by_path.get("agents:remove", 0))
    bound = workload.refresh_seconds + 3 * workload.latency_ms / 1000 + 0.5
    samples = outcome.latencies_ms
    return {
        "joins": joins,
        "p50_ms": percentile(samples, 0.50),
        "p95_ms": percentile(samples, 0.95),
        "p99_ms": percentile(samples, 0.99),
        "max_ms": max(samples, default=float("nan")),
        "dispatch_p50_ms": percentile(outcome.dispatch_ms, 0.50),
        "dispatch_p95_ms": percentile(outcome.dispatch_ms, 0.95),
        "db_reads": db_reads,
        "reads_per_1000_joins": 1000 * db_reads / max(joins, 1),
        # Prompt reads apart from the refresher's polls, whose count follows the run's length.
        "gets_per_1000_joins": 1000 * int(by_path.get("agents:get", 0)) / max(joins, 1),
        "polls": int(by_path.get("agents:changedSince", 0)),
        "hit_rate": outcome.cache_hits / max(joins, 1),
        "builds": outcome.builds,
        "stale_served": outcome.stale,
        "errors": outcome.errors,
        "wrong_prompts": count_wrong(outcome.served, editor.history, bound),
        "cache_bytes": outcome.cache_bytes,
        "edits": editor.edits,
        "deletes": deletes,
        **livekit_figures(outcome),
    }


def livekit_figures(outcome: Outcome) -> dict[str, Any]:
    """livekit mode: dispatches lost on the first attempt (a retry was needed), lost after
    the dispatcher's retries (no agent at all), and first dispatch -> agent ready."""
    ms, attempts = outcome.livekit_ms, outcome.livekit_attempts
    return {
        "livekit_dispatches": len(attempts),
        "livekit_lost_first_attempt": sum(1 for n in attempts if n > 1) + outcome.livekit_errors,
        "livekit_lost_after_retries": outcome.livekit_errors,
        "livekit_dispatch_p50_ms": percentile(ms, 0.50) if ms else None,
        "livekit_dispatch_p95_ms": percentile(ms, 0.95) if ms else None,
        "livekit_dispatch_p99_ms": percentile(ms, 0.99) if ms else None,
        "livekit_dispatch_max_ms": max(ms) if ms else None,
        "livekit_attempts_mean": sum(attempts) / len(attempts) if attempts else None,
        "livekit_errors": outcome.livekit_errors,
    }


async def run(
    workload: Workload,
    strategies: list[str],
    mode: str = "simulate",
    *,
    simulation: bool = False,
    max_jobs: int | None = None,
    worker_log_dir: Path | None = None,
) -> tuple[dict[str, dict[str, Any]], dict[str, list[float]]]:
    docs = seed_agents(workload)
    results: dict[str, dict[str, Any]] = {}
    latencies: dict[str, list[float]] = {}
    # SIGTERM cancels the run like Ctrl-C does, so the finally blocks below stop every
    # service (each in its own process group) before the process exits.
    loop = asyncio.get_running_loop()
    main_task = asyncio.current_task()
    assert main_task is not None
    loop.add_signal_handler(signal.SIGTERM, main_task.cancel)
    with tempfile.TemporaryDirectory(prefix="loadtest-seed-") as tmp, contextlib.ExitStack() as services:
        seed_file = Path(tmp) / "agents.json"
        seed_file.write_text(json.dumps({"agents": docs}))
        # Each service is registered for stopping as soon as it runs: an interrupt while
        # the next one starts must not orphan it.
        convex = start_local_convex(seed=seed_file, latency_ms=workload.latency_ms)
        services.callback(convex.stop)
        redis = start_redis() if "tiered-process-redis" in strategies else None
        if redis is not None:
            services.callback(redis.stop)
        livekit = start_livekit() if mode == "livekit" else None
        if livekit is not None:
            services.callback(livekit.stop)
        for name in strategies:
            convex.reset(data=True)
            if redis is not None:
                redis.flush()
            editor = Editor(convex, workload, docs)
            deleter = Deleter(convex, workload, editor.history)
            stop = asyncio.Event()
            changes = asyncio.gather(editor.run(stop), deleter.run(stop))
            progress = Progress(workload.joins, name)
            target = Target(
                convex=convex,
                redis_url=redis.url if redis else None,
                agent_ids=[local_backend_id(i) for i in range(workload.agents)],
                plan=join_plan(workload),
                concurrency=workload.concurrency,
                refresh_seconds=workload.refresh_seconds,
                progress=progress.advance,
                livekit=livekit if name in WORKER_STRATEGIES else None,
                simulation=simulation,
                max_jobs=max_jobs,
                worker_log_dir=worker_log_dir,
                arrivals=arrival_offsets(workload),
            )
            try:
                outcome = await run_strategy(name, target)
            finally:
                stop.set()
                await changes
            if name == "tiered-process-redis":
                assert redis is not None
                outcome.cache_bytes = redis.dataset_bytes()
            results[name] = summarize(workload, outcome, convex.stats(), editor, len(deleter.deleted))
            latencies[name] = outcome.latencies_ms
    return results, latencies


def _cpus(value: str) -> set[int]:
    return {int(part) for part in _csv(value)}


def _csv(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


async def run_audio_mode(workload: Workload, args: argparse.Namespace) -> list[dict[str, Any]]:
    """``--audio``: the services once, then every row (see ``bench.loadtest.audio``)."""
    docs = with_greetings(seed_agents(workload))
    worker_cpus = _cpus(args.worker_cpus) if args.worker_cpus else None
    if worker_cpus:
        os.sched_setaffinity(0, os.sched_getaffinity(0) - worker_cpus)  # inherited by every service and caller
    loop = asyncio.get_running_loop()
    main_task = asyncio.current_task()
    assert main_task is not None
    loop.add_signal_handler(signal.SIGTERM, main_task.cancel)
    with tempfile.TemporaryDirectory(prefix="loadtest-audio-") as tmp, contextlib.ExitStack() as services:
        seed_file = Path(tmp) / "agents.json"
        seed_file.write_text(json.dumps({"agents": docs}))
        convex = start_local_convex(seed=seed_file, latency_ms=workload.latency_ms)
        services.callback(convex.stop)
        livekit = start_livekit()
        services.callback(livekit.stop)
        standin = start_openai_standin(
            stt_delay_ms=args.stt_delay_ms, llm_ttft_ms=args.llm_ttft_ms, tts_ttfb_ms=args.tts_ttfb_ms
        )
        services.callback(standin.stop)
        log_dir = args.worker_log_dir or Path(tmp)
        log_dir.mkdir(parents=True, exist_ok=True)
        delays = {
            "stt_delay_ms": DEFAULT_STT_DELAY_MS if args.stt_delay_ms is None else args.stt_delay_ms,
            "llm_ttft_ms": DEFAULT_LLM_TTFT_MS if args.llm_ttft_ms is None else args.llm_ttft_ms,
            "tts_ttfb_ms": DEFAULT_TTS_TTFB_MS if args.tts_ttfb_ms is None else args.tts_ttfb_ms,
        }
        print(f"audio: OpenAI stand-in delays (ms) {delays}; {workload.joins} calls per row", flush=True)
        return await run_audio(
            livekit=livekit,
            convex=convex,
            standin=standin,
            agent_ids=[local_backend_id(i) for i in range(workload.agents)],
            calls=workload.joins,
            concurrencies=[int(c) for c in _csv(args.audio_concurrency)],
            executors=_csv(args.executors),
            rows=_csv(args.audio_rows),
            log_dir=log_dir,
            settings=dict(item.split("=", 1) for item in args.worker_env),
            worker_cpus=worker_cpus,
        )


def main(argv: list[str] | None = None) -> int:
    workload, args = parse_args(argv)
    if args.plot and not plot_available():
        print(PLOT_EXTRA_MISSING, file=sys.stderr)
        return 2
    if args.audio:
        if args.mode != "livekit":
            print("--audio applies to --mode livekit only", file=sys.stderr)
            return 2
        if any("=" not in item for item in args.worker_env):
            print("--worker-env takes KEY=VALUE", file=sys.stderr)
            return 2
        if args.worker_cpus:
            try:
                pinned = _cpus(args.worker_cpus)
            except ValueError:
                pinned = set()
            if not pinned or not pinned < os.sched_getaffinity(0):
                print(f"--worker-cpus must name some but not all of {sorted(os.sched_getaffinity(0))}", file=sys.stderr)
                return 2
        unknown = set(_csv(args.audio_rows)) - set(AUDIO_ROWS)
        if unknown or set(_csv(args.executors)) - {"thread", "process"}:
            print(f"--audio-rows takes {','.join(AUDIO_ROWS)}; --executors takes thread,process", file=sys.stderr)
            return 2
        try:
            audio = asyncio.run(run_audio_mode(workload, args))
        except (KeyboardInterrupt, asyncio.CancelledError):
            print("\nloadtest: interrupted; every service it started was stopped", file=sys.stderr)
            return 130
        if args.json:
            write_json(args.json, workload.as_json(), {}, audio)
        return 0
    strategies = args.strategy or list(STRATEGIES)
    if (args.simulation or args.max_jobs) and args.mode != "livekit":
        print("--simulation and --max-jobs apply to --mode livekit only", file=sys.stderr)
        return 2
    try:
        results, latencies = asyncio.run(
            run(
                workload,
                strategies,
                args.mode,
                simulation=args.simulation,
                max_jobs=args.max_jobs,
                worker_log_dir=args.worker_log_dir,
            )
        )
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("\nloadtest: interrupted; every service it started was stopped", file=sys.stderr)
        return 130
    print(table(results))
    if args.mode == "livekit":
        shedding = "off (--simulation)" if args.simulation else "on"
        print(f"\nreal livekit-server, dispatch_agent: first dispatch -> agent ready (ms); load shedding {shedding}")
        for name, figures in results.items():
            if figures["livekit_dispatches"]:
                p50, p95, p99 = (figures[f"livekit_dispatch_{p}_ms"] or float("nan") for p in ("p50", "p95", "p99"))
                print(f"  {name:22} p50 {p50:8.1f}  p95 {p95:8.1f}  p99 {p99:8.1f}  "
                      f"dispatches {figures['livekit_dispatches']}  "
                      f"lost first attempt {figures['livekit_lost_first_attempt']}  "
                      f"lost after retries {figures['livekit_lost_after_retries']}  "
                      f"attempts mean {figures['livekit_attempts_mean']:.2f}")  # fmt: skip
    if args.json:
        write_json(args.json, workload.as_json(), results)
    if args.plot:
        title = f"{workload.joins} joins, {workload.agents} agents, Convex at {workload.latency_ms:g} ms"
        plot(args.plot, latencies, title)
    return 0


if __name__ == "__main__":  # the executor driver re-imports nothing from here, but be safe
    sys.exit(main())
