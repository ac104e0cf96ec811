"""The LiveKit worker: room -> agent id -> cached prompt -> voice session.

Shaped like livekit-agents' ``basic_agent.py``: one ``AgentServer``, an
``@server.rtc_session`` entrypoint, ``on_request`` to turn away rooms we cannot serve
before any process or thread is spent on them, and a prewarm that builds this
process's AgentConfigService.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import structlog
from livekit import api
from livekit.agents import Agent, AgentServer, JobContext, JobExecutorType, JobProcess, JobRequest

from agent import room_guard
from agent.call_watch import CallWatch
from agent.call_watch import elapsed_ms as _ms
from agent.capacity import (
    STATUS_INTERVAL_SECONDS,
    CapacityPolicy,
    CpuSampler,
    CpuSaturation,
    default_max_jobs,
    load_function,
    report_status_every,
)
from agent.connect_gate import CONNECT_GATE
from agent.greeting import CALLER_LINK_SECONDS, GreetingSynthesizer, caller_linked, greet
from agent.llm_cache import CachedTokens
from agent.models import load_local_models, load_session_factory
from agent.service_holder import close_service, get_service, prepare_host_tier
from agent.settings import DEFAULT_MODEL_FACTORY, WorkerSettings, server_api_url
from agent.targeting import JobTarget, JobTargetError, resolve_target, room_name_for
from agent.tenancy import OrganizationNotServedError, check_organization, serves, warn_if_unrestricted
from services import AgentConfigError, AgentConfigService, AgentNotFoundError, PromptResult
from services.hints import clip
from services.logging import forward_events_to_the_worker, prompt_fingerprint
from services.records import format_version

log = structlog.get_logger("agent.worker")

CPU_WINDOW_SECONDS = 30.0
"""Host CPU counts only as a mean over this long: saturation, not a start-up spike."""


async def connect_without_cancel(ctx: JobContext) -> None:
    """``ctx.connect()``, always run to its end.

    A cancelled ``Room.connect()`` strands the FFI handshake; ~15 s later the FFI panics
    and SIGTERMs its process (python-sdks #784/#785), which under THREAD is every call of
    the worker. So a cancellation that arrives while connecting (start timeout, the
    framework's shutdown deadline) waits for the connect to finish, then takes effect.
    Connects take turns through ``CONNECT_GATE`` (see ``agent.connect_gate``)."""
    async with CONNECT_GATE.turn():  # waiting for the turn is cancellable; the connect is not
        connect = asyncio.ensure_future(ctx.connect())
        cancelled = await _finish(connect)
    if cancelled is not None:
        if not connect.cancelled():
            connect.exception()  # retrieved: the cancellation is what the caller sees
        log.info("connect_finished_before_cancel", room=ctx.job.room.name, jobId=ctx.job.id)
        raise cancelled
    connect.result()


async def _finish(task: asyncio.Future[Any]) -> asyncio.CancelledError | None:
    """Wait for ``task`` to end, whatever cancels the waiter; return the first such
    cancellation (for the caller to raise once the task is over)."""
    cancelled: asyncio.CancelledError | None = None
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError as exc:
            if task.done():
                break
            cancelled = cancelled or exc
    return cancelled


class JobYielded(Exception):
    """The job's room already has a live agent of ours, or its dispatch was withdrawn."""


async def _connect_and_check(ctx: JobContext, settings: WorkerSettings) -> str | None:
    """Connect; then why this job must leave, or None: its dispatch was withdrawn (the
    dispatcher replaced it) or another live agent of ours is in the room."""
    await connect_without_cancel(ctx)
    if ctx.is_fake_job():
        return None
    live_dispatches = await room_guard.dispatch_ids(ctx.api, ctx.job.room.name)
    if ctx.job.dispatch_id and ctx.job.dispatch_id not in live_dispatches:
        return "dispatch withdrawn"
    ours = [
        p
        for p in ctx.room.remote_participants.values()
        if room_guard.is_agent_kind(int(p.kind)) and room_guard.named(p, settings.agent_name)
    ]
    if room_guard.live_agents(ours, live_dispatches):
        return "room has an agent"
    return None


class WorkerServer(AgentServer):
    """livekit-agents' ``AgentServer``, which also closes, when it closes, the server API
    client ``on_request`` opened on its loop (left open, aiohttp reports an unclosed
    session as an error when the process exits)."""

    async def aclose(self) -> None:
        try:
            await super().aclose()
        finally:
            await close_main_process_api()


def build_server(settings: WorkerSettings, *, http_port: int | None = None) -> AgentServer:
    """``http_port``: the health endpoint's port (livekit's default, 8081, unless given; 0: any free one)."""
    executor = JobExecutorType.THREAD if settings.executor == "thread" else JobExecutorType.PROCESS
    if executor == JobExecutorType.PROCESS:
        prepare_host_tier()  # before the process pool starts: job processes inherit its directory
    policy = CapacityPolicy(max_jobs=settings.max_jobs or default_max_jobs(), target_load=settings.target_load)
    cpu = CpuSaturation(window_seconds=CPU_WINDOW_SECONDS, level=settings.cpu_saturation)
    port = http_port if http_port is not None else settings.http_port
    extra: dict[str, Any] = {} if port is None else {"port": port}
    report_status_every(STATUS_INTERVAL_SECONDS)
    CONNECT_GATE.width = settings.connect_concurrency  # THREAD jobs share this process's gate
    server = WorkerServer(
        job_executor_type=executor,
        ws_url=settings.livekit_url,
        api_key=settings.livekit_api_key,
        api_secret=settings.livekit_api_secret.get_secret_value(),
        setup_fnc=prewarm,
        prometheus_port=settings.prometheus_port,
        load_fnc=load_function(policy, cpu),
        load_threshold=policy.target_load,
        # livekit-agents prices a job accepted while none runs at
        # load_threshold / num_idle_processes: with one idle executor per slot that is
        # exactly one slot (the default, one per CPU, would mark a 2-CPU worker full after
        # two accepted jobs of a burst).
        num_idle_processes=policy.max_jobs,
        preload_modules=["agent.process_warmup"],
        **extra,
    )

    server.rtc_session(entrypoint, agent_name=settings.agent_name, on_request=on_request)
    warn_if_unrestricted(settings.organizations)

    @server.on("worker_started")
    def _start_main_service() -> None:
        log.info("worker_capacity", maxJobs=policy.max_jobs, targetLoad=policy.target_load,
                 cpuSaturation=settings.cpu_saturation)  # fmt: skip
        if settings.cpu_saturation <= 1:
            CpuSampler(cpu).start()
        # The main process's service (and its refresher) runs from the start, so the
        # first job already finds a current version index (and Redis heartbeat).
        try:
            service = get_service(run_refresher=True)
        except Exception:
            log.exception("service_start_failed")
            return
        if settings.model_factory == DEFAULT_MODEL_FACTORY and settings.greeting_cache:
            # Greetings are synthesized here, once per version, for every job of the worker.
            service.add_version_listener(GreetingSynthesizer(service).on_version)

    return server


# Module-level, not closures: the PROCESS executor pickles these into job processes.
# Each reads the settings from the environment it inherited from the worker.


async def on_request(request: JobRequest) -> None:
    await accept_or_reject(request, WorkerSettings.from_env())


async def entrypoint(ctx: JobContext) -> None:
    await run_job(ctx, WorkerSettings.from_env())


WARM_AGENT_ID = "0" * 32
"""A well-formed agent id that names no agent: what ``prewarm`` walks a job's path with."""


def prewarm(proc: JobProcess) -> None:
    """Build the service before the job arrives (in a PROCESS-mode job process this opens
    the host tier read-only, off the call's path). Never raises: a failing prewarm makes
    the worker respawn processes in a loop; the job itself reports what is wrong."""
    process_mode = proc.executor_type == JobExecutorType.PROCESS
    if process_mode:
        forward_events_to_the_worker()  # one log stream: the worker renders this process's events
    try:
        if WorkerSettings.from_env().model_factory == DEFAULT_MODEL_FACTORY:
            load_local_models()  # once per process (a no-op after the first), before any job
    except Exception:
        log.exception("local_models_failed")
    try:
        service = get_service(run_refresher=not process_mode)
        if process_mode:
            warmed = service.warm_job_process()
            # the rest of a job's way to its prompt: the room name's parse, the log chain
            # (structlog, the forwarding handler) and the organization check
            with contextlib.suppress(JobTargetError):
                resolve_target(room_name_for(WARM_AGENT_ID), "", WorkerSettings.from_env().room_name_pattern)
            check_organization(None, WARM_AGENT_ID, "")
            log.info("job_process_ready", hostTierWarmed=warmed)
    except Exception:
        log.exception("prewarm_failed")


async def accept_or_reject(
    request: JobRequest,
    settings: WorkerSettings,
    service: AgentConfigService | None = None,
    lk: api.LiveKitAPI | None = None,
) -> None:
    """Runs on the main process before any executor is spent on the job."""
    try:
        target = resolve_target(request.room.name, request.job.metadata, settings.room_name_pattern)
    except JobTargetError as exc:
        log.warning("job_rejected", room=clip(request.room.name), jobId=clip(request.job.id), reason=str(exc))
        await request.reject()
        return
    service = service or get_service()
    if service.known_missing(target.agent_id):  # a hint does not vouch for an unknown agent
        log.warning("job_rejected", room=clip(request.room.name), agentId=target.agent_id, reason="unknown agent")
        await request.reject()
        return
    # Known without I/O only if this process holds the agent; else the job checks it.
    organization = service.cached_organization(target.agent_id)
    if organization is not None and not serves(settings.organizations, organization):
        log.warning(
            "job_rejected",
            room=clip(request.room.name),
            agentId=target.agent_id,
            organizationId=clip(organization),
            reason="organization not served",
        )
        await request.reject()
        return
    # Start resolving now: it overlaps with the executor starting the job (and the room
    # check below), and in PROCESS mode with Redis it leaves the prompt in the shared tier.
    service.prefetch(target.agent_id, updated_at=target.updated_at)
    if await _room_has_our_agent(request, settings, lk):
        log.warning(
            "job_rejected", room=clip(request.room.name), jobId=clip(request.job.id), reason="room has an agent"
        )
        await request.reject()
        return
    attributes = {"agentId": target.agent_id, room_guard.DISPATCH_ID_ATTRIBUTE: request.job.dispatch_id}
    await request.accept(attributes=attributes)


_main_api: api.LiveKitAPI | None = None


def _main_process_api(settings: WorkerSettings) -> api.LiveKitAPI:
    """The main process's server API client (``on_request`` always runs on its loop)."""
    global _main_api  # noqa: PLW0603 - one client for the main process's loop
    if _main_api is None:
        secret = settings.livekit_api_secret.get_secret_value()
        _main_api = api.LiveKitAPI(server_api_url(settings.livekit_url), settings.livekit_api_key, secret)
    return _main_api


async def close_main_process_api() -> None:
    """Close the main process's server API client, if ``on_request`` opened one."""
    global _main_api
    client, _main_api = _main_api, None
    if client is not None:
        await client.aclose()


async def _room_has_our_agent(request: JobRequest, settings: WorkerSettings, lk: api.LiveKitAPI | None) -> bool:
    """One agent per room. A failed check lets the job in: a caller left alone is worse
    than a rare second agent, and the job checks again once connected."""
    try:
        live = await room_guard.room_live_agents(
            lk or _main_process_api(settings), request.room.name, settings.agent_name
        )
    except Exception as exc:  # noqa: BLE001 - logged, the job goes on
        log.warning(
            "room_check_failed", room=clip(request.room.name), jobId=clip(request.job.id), error=type(exc).__name__
        )
        return False
    return bool(live)


async def run_job(ctx: JobContext, settings: WorkerSettings, service: AgentConfigService | None = None) -> None:
    started = time.perf_counter()
    ctx.proc.userdata["job_started_at"] = time.time()  # wall clock, for probes and diagnostics
    job_log = log.bind(room=clip(ctx.job.room.name), jobId=clip(ctx.job.id))

    async def job_ended(reason: str) -> None:
        job_log.info("job_ended", reason=clip(reason), durationMs=_ms(started))

    ctx.add_shutdown_callback(job_ended)
    process_mode = ctx.proc.executor_type == JobExecutorType.PROCESS
    if process_mode:
        ctx.add_shutdown_callback(close_service)  # flush this process's write-backs
    try:
        target = resolve_target(ctx.job.room.name, ctx.job.metadata, settings.room_name_pattern)
    except JobTargetError as exc:
        job_log.warning("job_failed", reason="bad_target", error=str(exc))
        ctx.shutdown(reason="room does not name an agent")
        return
    job_log = job_log.bind(agentId=target.agent_id)
    try:
        async with asyncio.timeout(settings.job_start_timeout_seconds):
            service = service or get_service(run_refresher=not process_mode)
            result, timings = await _start_session(ctx, service, target, settings, started)
    except JobYielded as exc:
        job_log.warning("job_yielded", reason=str(exc), dispatchId=ctx.job.dispatch_id)
        ctx.shutdown(reason="room already served")
        return
    except AgentNotFoundError as exc:
        job_log.warning("job_failed", reason="unknown_agent", error=str(exc))
        ctx.shutdown(reason="unknown agent")
        return
    except OrganizationNotServedError as exc:
        job_log.warning("job_failed", reason="organization_not_served", organizationId=clip(exc.organization_id))
        ctx.shutdown(reason="organization not served")
        return
    except AgentConfigError as exc:
        job_log.error("job_failed", reason="config_unavailable", error=str(exc))
        ctx.shutdown(reason="agent configuration unavailable")
        return
    except TimeoutError:
        job_log.error("job_failed", reason="start_timeout", timeoutSeconds=settings.job_start_timeout_seconds)
        ctx.shutdown(reason="job start timed out")
        return
    except Exception as exc:  # noqa: BLE001 - a model error must end the job, not hang it
        job_log.exception("job_failed", reason="session_error", error=type(exc).__name__)
        ctx.shutdown(reason="session could not start")
        return
    job_log.info(
        "job_started",
        promptSource=result.source,
        promptStale=result.stale,
        promptUpdatedAt=result.updated_at,
        promptHash=prompt_fingerprint(result.prompt),
        targetFrom=target.source,
        **timings,
    )


async def _start_session(
    ctx: JobContext, service: AgentConfigService, target: JobTarget, settings: WorkerSettings, started: float
) -> tuple[PromptResult, dict[str, Any]]:
    timings: dict[str, Any] = {}

    async def resolve() -> PromptResult:
        result = await service.get_full_prompt(target.agent_id, updated_at=target.updated_at)
        check_organization(settings.organizations, target.agent_id, result.agent.organization_id)
        timings["promptResolvedMs"] = _ms(started)
        ctx.proc.userdata["prompt_resolved_at"] = time.time()  # wall clock, for probes
        return result

    # The prompt resolves while the room connects. Neither is cancelled when the other
    # fails: a connect in flight always finishes (see connect_without_cancel), and the job ends after.
    prompt_task = asyncio.create_task(resolve())
    connect_task = asyncio.create_task(_connect_and_check(ctx, settings))
    try:
        await asyncio.wait([prompt_task, connect_task])
    except asyncio.CancelledError:
        prompt_task.cancel()
        connect_task.cancel()  # safe: connect_without_cancel lets its connect finish first
        await _finish(connect_task)
        raise
    if prompt_task.exception() is not None and not connect_task.cancelled():
        connect_task.exception()  # retrieved: the prompt error is what the job reports
    result = prompt_task.result()  # a prompt error wins: it says what went wrong
    if reason := connect_task.result():
        raise JobYielded(reason)
    plan = load_session_factory(settings.model_factory)(result)
    for closer in plan.closers:
        ctx.add_shutdown_callback(closer)
    watch = CallWatch(ctx, target.agent_id, started, timings, CachedTokens().watch(plan.session))
    watch.attach(plan.session)
    await plan.session.start(
        agent=Agent(instructions=result.prompt), room=ctx.room, room_options=plan.room_options, record=False
    )
    timings["sessionStartedMs"] = _ms(started)
    await ctx.room.local_participant.set_attributes(
        {
            "agentId": target.agent_id,
            "promptSource": result.source,
            "promptUpdatedAt": format_version(result.updated_at),
            "promptStale": "true" if result.stale else "false",
        }
    )
    await caller_linked(plan.session, CALLER_LINK_SECONDS)
    watch.greeting_source = greet(plan, service if settings.greeting_cache else None, result)
    return result, timings
