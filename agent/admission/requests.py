"""``on_request``: accept or reject a job on the main process, before any executor is
spent on it (targeting, tenancy, the room guard), and start loading its agent."""

from __future__ import annotations

import structlog
from livekit import api
from livekit.agents import JobRequest

from agent.admission import room_guard
from agent.admission.targeting import JobTargetError, resolve_target
from agent.admission.tenancy import serves
from agent.service_holder import get_service
from agent.settings import WorkerSettings, server_api_url
from services import AgentConfigService
from services.hints import clip

log = structlog.get_logger("agent.worker")


# Module-level, not a closure: the PROCESS executor pickles it. It reads the settings
# from the environment it inherited from the worker.
async def on_request(request: JobRequest) -> None:
    await accept_or_reject(request, WorkerSettings.from_env())


async def accept_or_reject(
    request: JobRequest,
    settings: WorkerSettings,
    service: AgentConfigService | None = None,
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
    if await _room_has_our_agent(request, settings):
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


async def _room_has_our_agent(request: JobRequest, settings: WorkerSettings) -> bool:
    """One agent per room. A failed check lets the job in: a caller left alone is worse
    than a rare second agent, and the job checks again once connected."""
    try:
        live = await room_guard.room_live_agents(_main_process_api(settings), request.room.name, settings.agent_name)
    except Exception as exc:  # noqa: BLE001 - logged, the job goes on
        log.warning(
            "room_check_failed", room=clip(request.room.name), jobId=clip(request.job.id), error=type(exc).__name__
        )
        return False
    return bool(live)
