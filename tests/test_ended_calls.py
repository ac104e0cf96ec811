"""A call that has ended frees its slot at once, and the worker tells livekit-server so.

The end to end proof (a caller who redials on a full worker gets an agent on the first
dispatch) is in ``tests/test_e2e_voice.py``; here are the parts: the ended-call set, the
worker's ``active_jobs`` and its status push, on a worker running unregistered.
"""

from __future__ import annotations

import asyncio
import threading
from types import SimpleNamespace
from typing import cast

import pytest
from livekit.agents import AgentServer
from livekit.agents.job import RunningJobInfo

from agent.admission.ended_calls import ENDED_CALLS, EndedCalls
from agent.server import STATUS_PUSH_HOOKS, WorkerServer, build_server
from agent.service_holder import close_service
from agent.settings import WorkerSettings

FAKE_FACTORY = "devtools.fake_models:fake_session"


def job(job_id: str) -> RunningJobInfo:
    return cast(RunningJobInfo, SimpleNamespace(job=SimpleNamespace(id=job_id)))


def ids(jobs: list[RunningJobInfo]) -> list[str]:
    return [info.job.id for info in jobs]


def test_a_job_whose_call_ended_holds_no_slot() -> None:
    calls = EndedCalls()
    calls.mark("a")
    assert ids(calls.live([job("a"), job("b")])) == ["b"]


def test_each_call_that_ends_is_told_to_the_listener_once() -> None:
    calls, told = EndedCalls(), []
    calls.on_mark(lambda: told.append(1))
    calls.mark("a")
    calls.mark("a")  # the caller left, then the session closed: one call, one end
    calls.mark("b")
    assert len(told) == 2


def test_an_ended_job_that_has_gone_is_forgotten() -> None:
    calls = EndedCalls()
    calls.mark("a")
    assert ids(calls.live([job("b")])) == ["b"]  # "a" has left the worker
    assert ids(calls.live([job("a"), job("b")])) == ["a", "b"]  # nothing remembered of it


def test_livekit_agents_still_has_what_the_status_push_uses() -> None:
    """The push calls livekit-agents' private status report (pinned 1.8.9): an upgrade
    that renames it must fail here, not silently stop the push."""
    for name in STATUS_PUSH_HOOKS:
        if name != "_proc_pool":  # an attribute made in run(): the worker test below reads it
            assert callable(getattr(AgentServer, name, None)), name


class FakeExecutor(SimpleNamespace):
    running_job: RunningJobInfo


@pytest.fixture
def settings(monkeypatch: pytest.MonkeyPatch) -> WorkerSettings:
    for name in ("CONVEX_URL", "CONVEX_DEPLOY_KEY", "PROMPT_CACHE_REDIS_URL"):
        monkeypatch.delenv(name, raising=False)  # the main service: the embedded demo store
    monkeypatch.setenv("AGENT_MODEL_FACTORY", FAKE_FACTORY)  # the job threads' prewarm reads the env
    return WorkerSettings.model_validate(
        {
            "LIVEKIT_URL": "ws://127.0.0.1:9",
            "LIVEKIT_API_KEY": "devkey",
            "LIVEKIT_API_SECRET": "secret",
            "AGENT_MODEL_FACTORY": FAKE_FACTORY,
        }
    )


async def test_a_call_that_ends_is_reported_to_livekit_server_at_once_without_its_slot(
    settings: WorkerSettings,
) -> None:
    server = build_server(settings, http_port=0)
    assert isinstance(server, WorkerServer)
    started = asyncio.Event()
    server.on("worker_started", started.set)
    run = asyncio.create_task(server.run(devmode=False, unregistered=True))
    reports: list[int] = []  # the jobs each status report counted
    reported = asyncio.Event()
    call = FakeExecutor(running_job=job("call-1"))  # a running THREAD job, as the pool holds it

    async def report() -> None:  # livekit-agents' status report, recorded
        reports.append(len(server.active_jobs))
        reported.set()

    try:
        await asyncio.wait_for(started.wait(), 60)
        server._update_worker_status = report  # type: ignore[method-assign]
        server._proc_pool._executors.append(call)
        assert len(server.active_jobs) == 1

        # The caller hangs up: the job's thread marks its call ended.
        threading.Thread(target=ENDED_CALLS.mark, args=("call-1",)).start()
        await asyncio.wait_for(reported.wait(), 10)
        assert reports == [0], "the report still counted the ended call"
        assert len(server.active_jobs) == 0

        # A job that ends without a session (a PROCESS job, a failed start) reports too.
        reported.clear()
        server._proc_pool.emit("process_closed", FakeExecutor(running_job=job("call-2")))
        await asyncio.wait_for(reported.wait(), 10)
        assert len(reports) == 2
    finally:
        if call in server._proc_pool._executors:
            server._proc_pool._executors.remove(call)  # the pool's own executors it closes itself
        await server.aclose()
        run.cancel()
        await asyncio.gather(run, return_exceptions=True)
        await close_service()
