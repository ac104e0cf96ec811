"""The job: the ``@server.rtc_session`` entrypoint, from the room's name to a running
voice session.

The prompt resolves while the room connects (``agent.connect``); then the session the
model factory builds starts (``agent.sessions``), the greeting is said, and the job logs
``job_started`` with its timings.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import structlog
from livekit.agents import Agent, JobContext, JobExecutorType

from agent.admission.targeting import JobTarget, JobTargetError, resolve_target
from agent.admission.tenancy import OrganizationNotServedError, check_organization
from agent.connect.room import connect_and_check, finish
from agent.loop_lag import LoopLag
from agent.process_gauges import watch_loop
from agent.service_holder import close_service, get_service
from agent.sessions.call_watch import CallWatch
from agent.sessions.call_watch import elapsed_ms as _ms
from agent.sessions.factory import load_session_factory
from agent.sessions.greeting import CALLER_LINK_SECONDS, caller_linked, greet
from agent.sessions.provider_cache import CachedTokens
from agent.settings import WorkerSettings
from services import AgentConfigError, AgentConfigService, AgentNotFoundError, PromptResult
from services.hints import clip
from services.logging import prompt_fingerprint
from services.records import format_version

log = structlog.get_logger("agent.worker")


class JobYielded(Exception):
    """The job's room already has a live agent of ours, or its dispatch was withdrawn."""


# Module-level, not a closure: the PROCESS executor pickles it. It reads the settings
# from the environment it inherited from the worker.
async def entrypoint(ctx: JobContext) -> None:
    await run_job(ctx, WorkerSettings.from_env())


async def run_job(ctx: JobContext, settings: WorkerSettings, service: AgentConfigService | None = None) -> None:
    started = time.perf_counter()
    job_log = log.bind(room=clip(ctx.job.room.name), jobId=clip(ctx.job.id))

    watch_loop(asyncio.get_running_loop())
    lag = LoopLag()
    lag.start()

    async def job_ended(reason: str) -> None:
        job_log.info("job_ended", reason=clip(reason), durationMs=_ms(started), **(await lag.stop()))

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
        return result

    # The prompt resolves while the room connects. Neither is cancelled when the other
    # fails: a connect in flight always finishes (see agent.connect.room), and the job ends after.
    prompt_task = asyncio.create_task(resolve())
    connect_task = asyncio.create_task(connect_and_check(ctx, settings))
    try:
        await asyncio.wait([prompt_task, connect_task])
    except asyncio.CancelledError:
        prompt_task.cancel()
        connect_task.cancel()  # safe: connect_without_cancel lets its connect finish first
        await finish(connect_task)
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
    timings["callerLink"] = await caller_linked(plan.session, ctx.room, CALLER_LINK_SECONDS)
    if caller := plan.session.room_io.linked_participant:
        watch.caller_identity = caller.identity
    if timings["callerLink"] != "room_closed":  # nobody is left to hear it
        watch.greeting_source = greet(plan, service if settings.greeting_cache else None, result)
    return result, timings
