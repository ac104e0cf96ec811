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
from livekit.agents import Agent, AgentServer, JobContext, JobExecutorType, JobProcess, JobRequest
from livekit.agents.voice.events import ConversationItemAddedEvent

from agent.connect_gate import ConnectGate
from agent.llm_cache import CachedTokens
from agent.models import load_session_factory
from agent.service_holder import close_service, get_service, prepare_host_tier
from agent.settings import WorkerSettings
from agent.targeting import JobTarget, JobTargetError, resolve_target
from agent.tenancy import OrganizationNotServedError, check_organization, warn_if_unrestricted
from services import AgentConfigError, AgentConfigService, AgentNotFoundError, PromptResult
from services.hints import clip
from services.logging import forward_events_to_the_worker, prompt_fingerprint
from services.models import format_version

log = structlog.get_logger("agent.worker")


# THREAD executor: livekit's rtc core (livekit 1.1.21) can lose the connect callback
# when two job threads connect rooms at once; it then panics and SIGTERMs the whole
# worker. Connecting one room at a time per process avoids the overlap; a connect takes
# ~0.1-0.3 s and runs while the prompt resolves.
# The wait is cancellable without leaking the gate (a job whose prompt fails cancels it).
_CONNECT_GATE = ConnectGate()


async def _connect(ctx: JobContext) -> None:
    if ctx.proc.executor_type != JobExecutorType.THREAD:
        await ctx.connect()
        return
    async with _CONNECT_GATE.hold():
        await ctx.connect()


def _ms(since: float) -> float:
    return round((time.perf_counter() - since) * 1000, 1)


def build_server(settings: WorkerSettings, *, http_port: int | None = None) -> AgentServer:
    """``http_port``: the health endpoint's port (livekit's default, 8081, unless given; 0: any free one)."""
    executor = JobExecutorType.THREAD if settings.executor == "thread" else JobExecutorType.PROCESS
    if executor == JobExecutorType.PROCESS:
        prepare_host_tier()  # before the process pool starts: job processes inherit its directory
    server = AgentServer(
        job_executor_type=executor,
        ws_url=settings.livekit_url,
        api_key=settings.livekit_api_key,
        api_secret=settings.livekit_api_secret.get_secret_value(),
        setup_fnc=prewarm,
        prometheus_port=settings.prometheus_port,
        port=AgentServer._default_port if http_port is None else http_port,
    )

    server.rtc_session(entrypoint, agent_name=settings.agent_name, on_request=on_request)
    warn_if_unrestricted(settings.organizations)

    @server.on("worker_started")
    def _start_main_service() -> None:
        # The main process's service (and its refresher) runs from the start, so the
        # first job already finds a current version index (and Redis heartbeat).
        try:
            get_service(run_refresher=True)
        except Exception:
            log.exception("service_start_failed")

    return server


# Module-level, not closures: the PROCESS executor pickles these into job processes.
# Each reads the settings from the environment it inherited from the worker.


async def on_request(request: JobRequest) -> None:
    await accept_or_reject(request, WorkerSettings.from_env())


async def entrypoint(ctx: JobContext) -> None:
    await run_job(ctx, WorkerSettings.from_env())


def prewarm(proc: JobProcess) -> None:
    """Build the service before the job arrives (in a PROCESS-mode job process this opens
    the host tier read-only, off the call's path). Never raises: a failing prewarm makes
    the worker respawn processes in a loop; the job itself reports what is wrong."""
    if proc.executor_type == JobExecutorType.PROCESS:
        forward_events_to_the_worker()  # one log stream: the worker renders this process's events
    try:
        get_service(run_refresher=proc.executor_type == JobExecutorType.THREAD)
    except Exception:
        log.exception("prewarm_failed")


async def accept_or_reject(
    request: JobRequest, settings: WorkerSettings, service: AgentConfigService | None = None
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
    if organization is not None and settings.organizations is not None and organization not in settings.organizations:
        log.warning(
            "job_rejected",
            room=clip(request.room.name),
            agentId=target.agent_id,
            organizationId=clip(organization),
            reason="organization not served",
        )
        await request.reject()
        return
    # Start resolving now: it overlaps with the executor starting the job, and in
    # PROCESS mode with Redis it leaves the prompt in the shared tier for the job.
    service.prefetch(target.agent_id, updated_at=target.updated_at)
    await request.accept(attributes={"agentId": target.agent_id})


async def run_job(ctx: JobContext, settings: WorkerSettings, service: AgentConfigService | None = None) -> None:
    started = time.perf_counter()
    ctx.proc.userdata["job_started_at"] = time.time()  # wall clock, for probes and diagnostics
    job_log = log.bind(room=clip(ctx.job.room.name), jobId=clip(ctx.job.id))
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

    # The prompt resolves while the room connects.
    prompt_task = asyncio.create_task(resolve())
    connect_task = asyncio.create_task(_connect(ctx))
    try:
        result = await prompt_task
    except BaseException:
        connect_task.cancel()
        with contextlib.suppress(BaseException):
            await connect_task
        raise
    await connect_task
    plan = load_session_factory(settings.model_factory)(result)
    cached = CachedTokens().watch(plan.session)  # the provider's prompt cache, per job
    timings_logged = False

    def log_timings(first_reply_ms: float | None) -> None:
        # One event per job with all three times; at the first reply, or at shutdown if none came.
        nonlocal timings_logged
        if not timings_logged:
            timings_logged = True
            log.info(
                "job_timings",
                room=ctx.job.room.name,
                agentId=target.agent_id,
                promptResolvedMs=timings.get("promptResolvedMs"),
                sessionStartedMs=timings.get("sessionStartedMs"),
                firstReplyMs=first_reply_ms,
                promptCachedTokens=cached.cached_tokens,
            )

    def on_item(event: ConversationItemAddedEvent) -> None:
        if getattr(event.item, "role", None) == "assistant":
            log_timings(_ms(started))

    async def on_shutdown() -> None:
        log_timings(None)

    plan.session.on("conversation_item_added", on_item)
    ctx.add_shutdown_callback(on_shutdown)
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
    greeting = result.agent.config.get("greeting")
    if isinstance(greeting, str) and greeting:
        plan.session.generate_reply(instructions=f"Greet the caller with exactly: {greeting}")
    return result, timings
