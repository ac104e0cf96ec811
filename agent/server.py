"""The LiveKit worker: room -> agent id -> cached prompt -> voice session.

Shaped like livekit-agents' ``basic_agent.py``: one ``AgentServer``, an
``@server.rtc_session`` entrypoint (``agent.job``), ``on_request`` to turn away rooms we
cannot serve before any process or thread is spent on them (``agent.admission``), and a
prewarm that builds this process's AgentConfigService (``agent.prewarm``).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import structlog
from livekit.agents import AgentServer, JobExecutorType
from livekit.agents.job import RunningJobInfo

from agent.admission.capacity import (
    CALLS_PER_CPU,
    STATUS_INTERVAL_SECONDS,
    CapacityPolicy,
    CpuSampler,
    CpuSaturation,
    available_cpus,
    default_max_jobs,
    load_function,
    report_status_every,
)
from agent.admission.ended_calls import ENDED_CALLS, EndedCalls
from agent.admission.requests import close_main_process_api, on_request
from agent.admission.tenancy import warn_if_unrestricted
from agent.connect.gate import CONNECT_GATE
from agent.job import entrypoint
from agent.prewarm.job_process import prewarm
from agent.process_gauges import watch_loop
from agent.service_holder import get_service, prepare_host_tier
from agent.sessions.greeting import GreetingSynthesizer
from agent.settings import DEFAULT_MODEL_FACTORY, WorkerSettings
from agent.stall_watch import StallWatch

log = structlog.get_logger("agent.worker")

CPU_WINDOW_SECONDS = 30.0
"""Host CPU counts only as a mean over this long: saturation, not a start-up spike."""


STATUS_PUSH_HOOKS = ("_refresh_worker_load", "_update_worker_status", "_proc_pool")
"""What ``WorkerServer`` uses of livekit-agents' private API to push a status report: the
pinned version (1.8.9) has it, the server checks at start, and a test fails if it goes away."""


class WorkerServer(AgentServer):
    """livekit-agents' ``AgentServer`` with three changes:

    - a slot is free as soon as its call has ended (``active_jobs``), and livekit-server is
      told so at once, not at the next periodic status report
      (``agent.admission.ended_calls`` says why: a caller who redials at once was turned away);
    - a stall of its loop writes every thread's stack to stderr (``agent.stall_watch``);
    - it closes, when it closes, the server API client ``on_request`` opened on its loop
      (left open, aiohttp reports an unclosed session as an error when the process exits).
    """

    def __init__(self, *args: Any, ended_calls: EndedCalls = ENDED_CALLS, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._ended_calls = ended_calls
        self._status_push: asyncio.Task[None] | None = None
        self._push_again = False
        self._stall_watch = StallWatch()
        self.on("worker_started", self._watch_slots)
        self.on("worker_started", lambda: self._stall_watch.start(asyncio.get_running_loop()))

    @property
    def active_jobs(self) -> list[RunningJobInfo]:
        """The jobs whose call is in progress. livekit-agents reads this for the load it
        reports, the reserved-slot price and the job count; a job whose caller hung up is
        still tearing down (``drain`` waits for it all the same) but holds no slot."""
        return self._ended_calls.live(super().active_jobs)

    def _watch_slots(self) -> None:
        missing = [name for name in STATUS_PUSH_HOOKS if not hasattr(self, name)]
        if missing:
            raise RuntimeError(f"livekit-agents no longer has {missing}: see agent.server.STATUS_PUSH_HOOKS")
        loop = asyncio.get_running_loop()

        def from_any_thread() -> None:  # a THREAD job marks its call ended on its own thread
            with contextlib.suppress(RuntimeError):  # the worker's loop has closed: nothing to tell
                loop.call_soon_threadsafe(self.push_status)

        self._ended_calls.on_mark(from_any_thread)
        self._proc_pool.on("process_closed", lambda _proc: self.push_status())

    def push_status(self) -> None:
        """Report this worker's load and status to livekit-server now (on the worker's
        loop). Pushes asked for while one is in flight make one more after it."""
        if self._status_push is not None and not self._status_push.done():
            self._push_again = True
            return
        self._status_push = asyncio.get_running_loop().create_task(self._push_status(), name="status_push")

    async def _push_status(self) -> None:
        while True:
            self._push_again = False
            try:
                await self._refresh_worker_load()
                await self._update_worker_status()
            except Exception:  # the periodic report still runs: a push is only an early one
                log.exception("status_push_failed")
                return
            if not self._push_again:
                return

    async def aclose(self) -> None:
        try:
            await super().aclose()
        finally:
            self._stall_watch.stop()
            self._ended_calls.on_mark(None)
            await close_main_process_api()


def build_server(settings: WorkerSettings, *, http_port: int | None = None) -> AgentServer:
    """``http_port``: the health endpoint's port (livekit's default, 8081, unless given; 0: any free one)."""
    executor = JobExecutorType.THREAD if settings.executor == "thread" else JobExecutorType.PROCESS
    if executor == JobExecutorType.PROCESS:
        prepare_host_tier()  # before the process pool starts: job processes inherit its directory
    policy = CapacityPolicy(
        max_jobs=settings.max_jobs or default_max_jobs(settings.executor), target_load=settings.target_load
    )
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
        preload_modules=["agent.prewarm.forkserver"],
        **extra,
    )

    server.rtc_session(entrypoint, agent_name=settings.agent_name, on_request=on_request)
    warn_if_unrestricted(settings.organizations)

    @server.on("worker_started")
    def _start_main_service() -> None:
        watch_loop(asyncio.get_running_loop())
        by_cpu = f"{CALLS_PER_CPU[settings.executor]} per CPU ({settings.executor})"
        log.info("worker_capacity", maxJobs=policy.max_jobs, maxJobsFrom="AGENT_MAX_JOBS" if settings.max_jobs
                 else by_cpu, cpus=available_cpus(), targetLoad=policy.target_load,
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
