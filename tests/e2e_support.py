"""The worker by its real command (``python -m agent start``) against a real
livekit-server, for the e2e tests: start it, read its JSON log, stop or kill it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from livekit import api

from agent.dispatch import DispatchResult, _taken, dispatch_agent
from devtools.processes import LiveKitServer, LocalConvex
from tests.conftest import REPO, project_free_env
from tests.helpers import wait_for_async

AGENT_NAME = "e2e-voice-agent"


@dataclass
class Worker:
    process: subprocess.Popen[str]
    executor: str
    lines: list[str] = field(default_factory=list)
    changed: threading.Condition = field(default_factory=threading.Condition)

    def events(self, name: str) -> list[dict[str, Any]]:
        found = []
        for line in list(self.lines):
            if f'"event": "{name}"' in line:
                try:
                    found.append(json.loads(line))
                except ValueError:
                    continue
        return found

    def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Block until ``predicate()`` holds after some output (or the process ended)."""
        with self.changed:
            return self.changed.wait_for(lambda: predicate() or self.process.poll() is not None, timeout)

    def tail(self, n: int = 40) -> str:
        return "\n".join(self.lines[-n:])

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)

    def pause(self) -> None:
        """SIGSTOP the worker and its job processes: nothing in them moves until ``resume``."""
        os.killpg(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.killpg(self.process.pid, signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL the worker and every job process it started (paused or not)."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)


def services_env(livekit: LiveKitServer, convex: LocalConvex) -> dict[str, str]:
    """This environment without the project's settings, plus the test's LiveKit server,
    the worker's dispatch name and the local Convex backend."""
    return {
        **project_free_env(),
        "LIVEKIT_URL": livekit.url,
        "LIVEKIT_API_KEY": livekit.api_key,
        "LIVEKIT_API_SECRET": livekit.api_secret,
        "AGENT_NAME": AGENT_NAME,
        "CONVEX_URL": convex.url,
        "CONVEX_DEPLOY_KEY": convex.deploy_key,
    }


def start_worker(livekit: LiveKitServer, convex: LocalConvex, *args: str, **env: str) -> Worker:
    """``python -m agent start`` with the fake LLM; returns once it has registered."""
    full_env = {
        **services_env(livekit, convex),
        "PROMPT_REFRESH_SECONDS": "0.5",
        "AGENT_MODEL_FACTORY": "devtools.fake_models:fake_session",
        "LOG_FORMAT": "json",
        "AGENT_HTTP_PORT": "0",
        **env,
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "agent", "start", *args],
        cwd=REPO,
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    worker = watch(process, full_env.get("AGENT_EXECUTOR", "thread"))
    if not worker.wait_for(lambda: any("registered worker" in line for line in worker.lines), 90):
        worker.stop()
        raise AssertionError("worker never registered:\n" + worker.tail())
    if process.poll() is not None:
        raise AssertionError(f"worker exited ({process.returncode}):\n" + worker.tail())
    return worker


def watch(process: subprocess.Popen[str], executor: str) -> Worker:
    """A started worker whose output (stdout with stderr) is read line by line from now on."""
    worker = Worker(process, executor)

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            with worker.changed:
                worker.lines.append(line.rstrip())
                worker.changed.notify_all()
        with worker.changed:
            worker.changed.notify_all()

    threading.Thread(target=pump, daemon=True).start()
    return worker


def server_api(livekit: LiveKitServer) -> api.LiveKitAPI:
    return api.LiveKitAPI(livekit.http_url, livekit.api_key, livekit.api_secret)


async def our_agents(lk: api.LiveKitAPI, room: str) -> list[api.ParticipantInfo]:
    listed = await lk.room.list_participants(api.ListParticipantsRequest(room=room))
    return [p for p in listed.participants if p.kind == api.ParticipantInfo.Kind.AGENT]


async def poll_until(check: Callable[[], Awaitable[bool]], seconds: float, interval: float = 0.1) -> bool:
    """Ask the server until ``check()`` holds (it has no event for what the test waits on)."""
    return await wait_for_async(check, seconds, interval=interval)


def job_of(result: DispatchResult) -> str:
    """The job id behind the agent that answered (its identity is ``agent-<jobId>``)."""
    return result.agent_identity.removeprefix("agent-")


async def call_until_jobs_are_listed(
    lk: api.LiveKitAPI, room: str, agent_id: str, *, agent_name: str, attempt_seconds: float, attempts: int = 3
) -> DispatchResult:
    """One call into ``room``, then wait until livekit-server lists its job (what
    ``dispatch_agent`` asks to tell a taken dispatch from a dropped one). The server lists
    no job while it refreshes its agent namespaces: for up to 5 s (``CheckEnabledTimeout``)
    from the first dispatch more than a minute after its last refresh began, so from the
    first dispatch on a fresh server. A test that relies on the listing calls this first.
    ``attempt_seconds`` and ``attempts``: ``dispatch_agent``'s ``timeout`` and ``attempts``."""
    result = await dispatch_agent(lk, room, agent_id, agent_name=agent_name, timeout=attempt_seconds, attempts=attempts)
    listed = await poll_until(lambda: _taken(lk, room, result.dispatch_id), 15)
    assert listed, f"livekit-server never listed the job of the call into {room}"
    return result
