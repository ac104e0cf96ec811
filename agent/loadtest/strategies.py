"""One function per strategy. Each serves the joins of a plan and reports, per join,
what was served and how long it took; the runner does the rest."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from agent.loadtest.baselines import NoCacheService, Resolved, SeedAgentConfigService
from agent.loadtest.checker import Served
from agent.targeting import room_name_for
from devtools.fake_models import prompt_tag
from devtools.processes import REPO, LocalConvex

STRATEGIES = ("no-cache", "seed", "tiered", "tiered-process", "tiered-process-redis")


@dataclass
class Outcome:
    served: list[Served] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    dispatch_ms: list[float] = field(default_factory=list)
    cache_hits: int = 0
    builds: int = 0
    stale: int = 0
    errors: int = 0
    cache_bytes: int = 0


@dataclass(frozen=True)
class Target:
    """Where a strategy runs its joins."""

    convex: LocalConvex
    redis_url: str | None
    agent_ids: list[str]
    plan: list[int]
    concurrency: int
    refresh_seconds: float
    progress: Callable[[int], None]


async def _in_process(target: Target, resolve: Callable[[str], Awaitable[Resolved]]) -> Outcome:
    outcome = Outcome()
    queue: asyncio.Queue[int] = asyncio.Queue()
    for index in target.plan:
        queue.put_nowait(index)

    async def worker() -> None:
        while not queue.empty():
            agent_id = target.agent_ids[queue.get_nowait()]
            started_wall, started = time.time(), time.perf_counter()
            try:
                resolved = await resolve(agent_id)
            except Exception:  # noqa: BLE001 - counted, the run goes on
                outcome.errors += 1
            else:
                elapsed = (time.perf_counter() - started) * 1000
                outcome.latencies_ms.append(elapsed)
                outcome.dispatch_ms.append(elapsed)
                outcome.served.append(Served(agent_id, started_wall, resolved.updated_at, prompt_tag(resolved.prompt)))
                outcome.builds += resolved.built
                outcome.cache_hits += resolved.cache_hit
            target.progress(1)

    await asyncio.gather(*(worker() for _ in range(target.concurrency)))
    return outcome


async def run_no_cache(target: Target) -> Outcome:
    service = NoCacheService(target.convex.url, target.convex.deploy_key)
    try:
        return await _in_process(target, service.resolve)
    finally:
        await service.aclose()


async def run_seed(target: Target) -> Outcome:
    service = SeedAgentConfigService(target.convex.url, target.convex.deploy_key)
    try:
        outcome = await _in_process(target, service.resolve)
        outcome.cache_bytes = service.cache_bytes
        return outcome
    finally:
        await service.aclose()


def _count_lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


async def run_through_executor(target: Target, executor: str, use_redis: bool) -> Outcome:
    """The real worker in a child process, jobs through livekit-agents' executors."""
    with tempfile.TemporaryDirectory(prefix="loadtest-") as tmp:
        folder = Path(tmp)
        rooms = [room_name_for(target.agent_ids[index], f"j{n}") for n, index in enumerate(target.plan)]
        (folder / "rooms.json").write_text(json.dumps(rooms))
        events = folder / "events.jsonl"
        keep = ("LIVEKIT_", "CONVEX_", "PROMPT_", "AGENT", "PROBE_")
        env = {k: v for k, v in os.environ.items() if not k.startswith(keep)}
        env |= {
            "LIVEKIT_URL": "ws://127.0.0.1:9",  # unregistered: never dialled
            "LIVEKIT_API_KEY": "devkey",
            "LIVEKIT_API_SECRET": "secret",
            "AGENT_EXECUTOR": executor,
            "AGENT_MODEL_FACTORY": "devtools.fake_models:recording_session",
            "PROBE_EVENTS": str(events),
            "PROBE_END_JOB": "1",
            "CONVEX_URL": target.convex.url,
            "CONVEX_DEPLOY_KEY": target.convex.deploy_key,
            "PROMPT_REFRESH_SECONDS": str(target.refresh_seconds),
            "LOG_FORMAT": "json",
        }
        if use_redis and target.redis_url:
            env["PROMPT_CACHE_REDIS_URL"] = target.redis_url
        args = [sys.executable, "-m", "agent.loadtest.executor_driver", "--rooms", str(folder / "rooms.json"),
                "--concurrency", str(target.concurrency), "--out", str(folder / "out.json")]  # fmt: skip
        log = (folder / "driver.log").open("w")
        try:
            process = await asyncio.create_subprocess_exec(*args, cwd=REPO, env=env, stdout=log, stderr=log)
            seen = 0
            while process.returncode is None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(process.wait(), 0.5)
                done = await asyncio.to_thread(_count_lines, events)
                target.progress(done - seen)
                seen = done
        finally:
            log.close()
        if process.returncode != 0:
            tail = (folder / "driver.log").read_text()[-3000:]
            raise RuntimeError(f"executor driver failed ({process.returncode}):\n{tail}")
        report = json.loads((folder / "out.json").read_text())
    outcome = Outcome(cache_bytes=int(report["cacheBytes"]))
    for join in report["joins"]:
        event = join.get("event")
        if event is None:
            outcome.errors += 1
            continue
        job_started = event["jobStartedAt"] or join["dispatchedAt"]
        outcome.latencies_ms.append((event["resolvedAt"] - job_started) * 1000)
        outcome.dispatch_ms.append((event["resolvedAt"] - join["dispatchedAt"]) * 1000)
        outcome.served.append(Served(event["agentId"], join["dispatchedAt"], event["updatedAt"], event["promptHash"]))
        outcome.builds += event["source"] == "build"
        outcome.cache_hits += event["source"] in ("ram", "redis")
        outcome.stale += bool(event["stale"])
    return outcome


async def run_strategy(name: str, target: Target) -> Outcome:
    if name == "no-cache":
        return await run_no_cache(target)
    if name == "seed":
        return await run_seed(target)
    if name == "tiered":
        return await run_through_executor(target, "thread", use_redis=False)
    if name == "tiered-process":
        return await run_through_executor(target, "process", use_redis=False)
    if name == "tiered-process-redis":
        return await run_through_executor(target, "process", use_redis=True)
    raise ValueError(f"unknown strategy {name!r}; choose from {', '.join(STRATEGIES)}")
