"""Prompt-cache figures, each next to its baseline in the same run.

    .venv/bin/python -m bench.prompt_cache [--hits 20000] [--latency-ms 100] [--joins 200] [--hit-path-only]

1. hit path: ``get_full_prompt`` served from RAM vs a bare dict lookup;
2. cold burst: 500 concurrent joins for one agent nobody has loaded: Convex reads,
   this service vs the seed's code;
3. joins over the demo agents against a Convex that answers in ``--latency-ms``:
   the seed's code (a read per join) vs this service.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import logging
import statistics
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Protocol

from bench.loadtest.baselines import SeedAgentConfigService
from bench.loadtest.report import percentile
from devtools.processes import DEMO_SEED, LocalConvex, start_local_convex
from services import AgentConfigService, ServiceSettings
from services.logging import configure_logging
from services.store.factory import default_store_factory
from services.store.file import local_backend_id


def percentiles(samples: list[float]) -> tuple[float, float, float]:
    return percentile(samples, 0.50), percentile(samples, 0.99), max(samples)


def service_for(convex: LocalConvex) -> AgentConfigService:
    settings = ServiceSettings.model_validate({"CONVEX_URL": convex.url, "CONVEX_DEPLOY_KEY": convex.deploy_key})
    return AgentConfigService(settings, store_factory=default_store_factory(settings))


async def timed(samples: list[float], call: Callable[[], Awaitable[object]]) -> None:
    started = time.perf_counter()
    await call()
    samples.append((time.perf_counter() - started) * 1000)


def log_to_buffer(level: int) -> io.StringIO:
    """The project's logging, JSON, at ``level``, rendered into a buffer instead of stderr."""
    configure_logging(json_logs=True, level=level)
    buffer = io.StringIO()
    logging.getLogger().handlers[0].stream = buffer  # type: ignore[attr-defined]
    return buffer


async def hit_path(convex: LocalConvex, hits: int) -> None:
    agent_id = local_backend_id(0)
    service = service_for(convex)
    await service.get_full_prompt(agent_id)
    table = {f"{agent_id}:1767225600000": "prompt"}
    key = f"{agent_id}:1767225600000"
    dict_samples: list[float] = []
    for _ in range(hits):
        started = time.perf_counter()
        _ = table[key]
        dict_samples.append((time.perf_counter() - started) * 1000)
    rows = [("bare dict lookup", dict_samples)]
    rendered = 0
    for label, level in (
        ("service RAM hit, INFO event rendered as JSON", logging.INFO),
        ("service RAM hit, log level WARNING", logging.WARNING),
    ):
        buffer = log_to_buffer(level)
        samples: list[float] = []
        for _ in range(hits):
            await timed(samples, lambda: service.get_full_prompt(agent_id))
        rows.append((label, samples))
        if level == logging.INFO:
            rendered = buffer.getvalue().count('"event": "prompt_resolved"')
    await service.aclose()
    print(f"\n1. hit path, {hits} lookups each (us); {rendered} prompt_resolved lines rendered at INFO")
    print(f"   {'':46} {'p50':>9} {'p99':>9} {'max':>9} {'p50 / dict':>11}")
    dict_p50 = percentiles(dict_samples)[0]
    for label, samples in rows:
        p50, p99, worst = (1000 * figure for figure in percentiles(samples))
        ratio = p50 / (1000 * dict_p50) if dict_p50 > 0 else float("inf")
        print(f"   {label:46} {p50:9.2f} {p99:9.2f} {worst:9.0f} {ratio:10.0f}x")
    print("   goal for the INFO row: p50 <= 20 us, p99 <= 50 us, p50 <= 200x the dict's")


class Strategy(Protocol):
    async def get_full_prompt(self, agent_id: str) -> object: ...
    async def aclose(self) -> None: ...


def strategy(name: str, convex: LocalConvex) -> Strategy:
    if name == "seed as written":
        return SeedAgentConfigService(convex.url, convex.deploy_key)
    return service_for(convex)


STRATEGIES = ("seed as written", "this service")


async def cold_burst(latency_ms: float) -> None:
    print(f"\n2. cold burst: 500 concurrent joins for one unloaded agent, Convex at {latency_ms:g} ms")
    agent_id = local_backend_id(1)
    for name in STRATEGIES:
        convex = start_local_convex(seed=DEMO_SEED, latency_ms=latency_ms)
        try:
            subject = strategy(name, convex)
            started = time.perf_counter()
            await asyncio.gather(*(subject.get_full_prompt(agent_id) for _ in range(500)))
            wall = (time.perf_counter() - started) * 1000
            await subject.aclose()
            gets = convex.stats()["byPath"].get("agents:get", 0)
            print(
                f"   {name:16} agents:get reads: {gets:4d}   all requests: {convex.reads():4d}   wall: {wall:8.1f} ms"
            )
        finally:
            convex.stop()


async def joins(latency_ms: float, count: int) -> None:
    print(f"\n3. {count} sequential joins over the 4 demo agents, Convex at {latency_ms:g} ms (ms per join)")
    print(f"   {'':16} {'p50':>9} {'p99':>9} {'max':>9} {'mean':>9} {'reads':>6}")
    agent_ids = [local_backend_id(i) for i in range(4)]
    for name in STRATEGIES:
        convex = start_local_convex(seed=DEMO_SEED, latency_ms=latency_ms)
        try:
            subject = strategy(name, convex)
            samples: list[float] = []
            for i in range(count):
                await timed(samples, partial(subject.get_full_prompt, agent_ids[i % 4]))
            await subject.aclose()
            reads = convex.stats()["byPath"].get("agents:get", 0)
            p50, p99, worst = percentiles(samples)
            mean = statistics.fmean(samples)
            print(f"   {name:16} {p50:9.3f} {p99:9.3f} {worst:9.3f} {mean:9.3f} {reads:6d}")
        finally:
            convex.stop()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hits", type=int, default=20_000)
    parser.add_argument("--latency-ms", type=float, default=100)
    parser.add_argument("--joins", type=int, default=200)
    parser.add_argument("--hit-path-only", action="store_true", help="only figure 1")
    args = parser.parse_args()
    log_to_buffer(logging.INFO)
    convex = start_local_convex(seed=DEMO_SEED)
    try:
        await hit_path(convex, args.hits)
    finally:
        convex.stop()
    log_to_buffer(logging.WARNING)
    if args.hit_path_only:
        return
    await cold_burst(args.latency_ms)
    await joins(args.latency_ms, args.joins)


if __name__ == "__main__":
    asyncio.run(main())
