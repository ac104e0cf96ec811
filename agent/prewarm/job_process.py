"""``prewarm``: what livekit-agents runs in a job process (or, under THREAD, the worker's
process) before its first job arrives."""

from __future__ import annotations

import contextlib

import structlog
from livekit.agents import JobExecutorType, JobProcess

from agent.admission.targeting import JobTargetError, resolve_target, room_name_for
from agent.admission.tenancy import check_organization
from agent.prewarm.heap import freeze_startup_heap
from agent.prewarm.local_models import load_local_models
from agent.service_holder import get_service
from agent.settings import DEFAULT_MODEL_FACTORY, WorkerSettings
from services.logging import forward_events_to_the_worker

log = structlog.get_logger("agent.worker")

WARM_AGENT_ID = "0" * 32
"""A well-formed agent id that names no agent: what ``prewarm`` walks a job's path with."""


# Module-level, not a closure: the PROCESS executor pickles it.
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
    freeze_startup_heap()  # once per process, now that what lives as long as it is built
