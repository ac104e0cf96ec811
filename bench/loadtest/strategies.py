"""One function per strategy. Each serves the joins of a plan and reports, per join,
what was served and how long it took; the runner does the rest."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from agent.admission.targeting import room_name_for
from bench.loadtest.baselines import NoCacheService, Resolved, SeedAgentConfigService
from bench.loadtest.checker import Served
from devtools.fake_models import prompt_tag
from devtools.processes import REPO, LiveKitServer, LocalConvex

STRATEGIES = ("no-cache", "seed", "tiered", "tiered-process", "tiered-process-redis")


WORKER_STRATEGIES = ("tiered", "tiered-process", "tiered-process-redis")
LIVEKIT_AGENT_NAME = "loadtest-agent"


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
    livekit_ms: list[float] = field(default_factory=list)
    livekit_errors: int = 0
    livekit_attempts: list[int] = field(default_factory=list)
    """Dispatches each livekit-mode join took (also for joins that got no agent)."""


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
    livekit: LiveKitServer | None = None
    simulation: bool = False
    """livekit mode: start the worker with ``--simulation`` (no load shedding)."""
    max_jobs: int | None = None
    """livekit mode: the worker's AGENT_MAX_JOBS (None: its default)."""
    worker_log_dir: Path | None = None
    """livekit mode: keep each strategy's worker log there."""
    arrivals: list[float] | None = None
    """Open loop: join ``n`` arrives ``arrivals[n]`` seconds after the start (``None``: closed loop)."""


async def _arrival(target: Target, n: int, started_at: float) -> None:
    """Waits for join ``n``'s arrival (monotonic ``started_at`` + its offset); at once in a closed loop."""
    if target.arrivals is not None:
        await asyncio.sleep(max(0.0, started_at + target.arrivals[n] - time.monotonic()))


async def _in_process(target: Target, resolve: Callable[[str], Awaitable[Resolved]]) -> Outcome:
    outcome = Outcome()
    slots = asyncio.Semaphore(target.concurrency)
    started_at = time.monotonic()

    async def join(n: int, index: int) -> None:
        await _arrival(target, n, started_at)
        async with slots:
            agent_id = target.agent_ids[index]
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

    await asyncio.gather(*(join(n, index) for n, index in enumerate(target.plan)))
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


def _worker_env(target: Target, executor: str, use_redis: bool, events: Path) -> dict[str, str]:
    keep = ("LIVEKIT_", "CONVEX_", "PROMPT_", "AGENT", "PROBE_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(keep)}
    env |= {
        "LIVEKIT_URL": target.livekit.url if target.livekit else "ws://127.0.0.1:9",  # :9 is never dialled
        "LIVEKIT_API_KEY": target.livekit.api_key if target.livekit else "devkey",
        "LIVEKIT_API_SECRET": target.livekit.api_secret if target.livekit else "secret",
        "AGENT_EXECUTOR": executor,
        "AGENT_MODEL_FACTORY": "devtools.fake_models:recording_session",
        "PROBE_EVENTS": str(events),
        "PROBE_END_JOB": "0.2",
        "CONVEX_URL": target.convex.url,
        "CONVEX_DEPLOY_KEY": target.convex.deploy_key,
        "PROMPT_REFRESH_SECONDS": str(target.refresh_seconds),
        "LOG_FORMAT": "json",
        "AGENT_HTTP_PORT": "0",  # a free port: another worker on this host may hold 8081
    }
    if use_redis and target.redis_url:
        env["PROMPT_CACHE_REDIS_URL"] = target.redis_url
    return env


def _count_lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


async def run_through_executor(target: Target, executor: str, use_redis: bool) -> Outcome:
    """The real worker in a child process, jobs through livekit-agents' executors."""
    with tempfile.TemporaryDirectory(prefix="loadtest-") as tmp:
        folder = Path(tmp)
        rooms = [room_name_for(target.agent_ids[index], f"j{n}") for n, index in enumerate(target.plan)]
        (folder / "rooms.json").write_text(json.dumps(rooms))
        events = folder / "events.jsonl"
        env = _worker_env(target, executor, use_redis, events)
        env["LIVEKIT_URL"] = "ws://127.0.0.1:9"  # unregistered: never dialled
        args = [sys.executable, "-m", "devtools.executor_driver", "--rooms", str(folder / "rooms.json"),
                "--concurrency", str(target.concurrency), "--out", str(folder / "out.json")]  # fmt: skip
        if target.arrivals is not None:
            (folder / "arrivals.json").write_text(json.dumps(target.arrivals))
            args += ["--arrivals", str(folder / "arrivals.json")]
        log = (folder / "driver.log").open("w")
        try:
            process = await asyncio.create_subprocess_exec(*args, cwd=REPO, env=env, stdout=log, stderr=log)
            try:
                seen = 0
                while process.returncode is None:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(process.wait(), 0.5)
                    done = await asyncio.to_thread(_count_lines, events)
                    target.progress(done - seen)
                    seen = done
            finally:
                if process.returncode is None:  # interrupted: the driver must not outlive us
                    process.terminate()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(asyncio.shield(process.wait()), 10)
                    if process.returncode is None:
                        process.kill()
        finally:
            log.close()
        if process.returncode != 0:
            tail = (folder / "driver.log").read_text()[-3000:]
            raise RuntimeError(f"executor driver failed ({process.returncode}):\n{tail}")
        report = json.loads((folder / "out.json").read_text())
    outcome = Outcome(cache_bytes=int(report["cacheBytes"]))
    for join in report["joins"]:
        event = join.get("event")
        # when the job started and resolved its prompt, as the worker logged them
        job_started, resolved = join.get("jobStartedAt"), join.get("promptResolvedAt")
        if event is None or job_started is None or resolved is None:
            outcome.errors += 1
            continue
        outcome.latencies_ms.append((resolved - job_started) * 1000)
        outcome.dispatch_ms.append((resolved - join["dispatchedAt"]) * 1000)
        outcome.served.append(Served(event["agentId"], join["dispatchedAt"], event["updatedAt"], event["promptHash"]))
        outcome.builds += event["source"] == "build"
        outcome.cache_hits += event["source"] in ("ram", "host", "redis")
        outcome.stale += bool(event["stale"])
    return outcome


async def livekit_phase(target: Target, executor: str, use_redis: bool, outcome: Outcome) -> None:
    """The worker by its real command (load shedding on unless ``target.simulation``)
    against a real livekit-server: each join is a call started with ``dispatch_agent``
    into its own room, timed from the first dispatch to the agent ready, then hung up."""
    from livekit import api

    from agent.dispatch import DispatchError, dispatch_agent

    assert target.livekit is not None
    livekit = target.livekit
    with tempfile.TemporaryDirectory(prefix="loadtest-lk-") as tmp:
        env = _worker_env(target, executor, use_redis, Path(tmp) / "events.jsonl")
        env["AGENT_NAME"] = LIVEKIT_AGENT_NAME
        env["PROBE_END_JOB"] = "30"  # a backstop: the call hangs up (deletes its room) once the agent is ready
        if target.max_jobs:
            env["AGENT_MAX_JOBS"] = str(target.max_jobs)
        log_path = Path(tmp) / "worker.log"
        log = log_path.open("w")
        worker = await _start_registered_worker(env, log, log_path, target.simulation)
        try:
            async with api.LiveKitAPI(livekit.http_url, livekit.api_key, livekit.api_secret) as lk:
                slots = asyncio.Semaphore(target.concurrency)
                started_at = time.monotonic()

                async def join(n: int, index: int) -> None:
                    agent_id = target.agent_ids[index]
                    room = room_name_for(agent_id, f"lk{n}")
                    await _arrival(target, n, started_at)
                    async with slots:
                        try:
                            result = await dispatch_agent(lk, room, agent_id, agent_name=LIVEKIT_AGENT_NAME)
                        except DispatchError as exc:
                            outcome.livekit_errors += 1
                            outcome.livekit_attempts.append(exc.attempts)
                            print(f"\nlivekit join {room} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
                        else:
                            outcome.livekit_ms.append(result.seconds * 1000)
                            outcome.livekit_attempts.append(result.attempts)
                        with contextlib.suppress(api.TwirpError):  # the caller hangs up
                            await lk.room.delete_room(api.DeleteRoomRequest(room=room))

                await asyncio.gather(*(join(n, index) for n, index in enumerate(target.plan)))
            if outcome.livekit_errors:
                print(f"\nworker log (tail):\n{log_path.read_text()[-4000:]}", file=sys.stderr)
        finally:
            await _stop_worker(worker)
            log.close()
            if target.worker_log_dir is not None:
                target.worker_log_dir.mkdir(parents=True, exist_ok=True)
                shutil.copy(log_path, target.worker_log_dir / f"worker-{executor}{'-redis' if use_redis else ''}.log")


async def _start_registered_worker(
    env: dict[str, str], log: IO[str], log_path: Path, simulation: bool
) -> asyncio.subprocess.Process:
    """``python -m agent start`` (``--simulation`` only when asked), once it has registered."""
    flags = ["--simulation"] if simulation else []
    worker = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agent", "start", *flags, cwd=REPO, env=env, stdout=log, stderr=log
    )
    for _ in range(900):
        await asyncio.sleep(0.1)
        if "registered worker" in await asyncio.to_thread(log_path.read_text):
            return worker
    await _stop_worker(worker)
    raise RuntimeError("worker never registered:\n" + (await asyncio.to_thread(log_path.read_text))[-3000:])


async def _stop_worker(worker: asyncio.subprocess.Process) -> None:
    if worker.returncode is not None:
        print(f"\nthe worker exited (status {worker.returncode}) during the livekit phase", file=sys.stderr)
        return
    worker.terminate()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(worker.wait(), 30)
    if worker.returncode is None:
        worker.kill()


async def run_strategy(name: str, target: Target) -> Outcome:
    if name == "no-cache":
        return await run_no_cache(target)
    if name == "seed":
        return await run_seed(target)
    executors = {
        "tiered": ("thread", False),
        "tiered-process": ("process", False),
        "tiered-process-redis": ("process", True),
    }
    if name in executors:
        executor, use_redis = executors[name]
        outcome = await run_through_executor(target, executor, use_redis)
        if target.livekit is not None:
            await livekit_phase(target, executor, use_redis, outcome)
        return outcome
    raise ValueError(f"unknown strategy {name!r}; choose from {', '.join(STRATEGIES)}")
