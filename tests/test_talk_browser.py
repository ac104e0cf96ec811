"""The talk page in a real browser: a caller talks to the agent and hangs up.

Everything runs for real: livekit-server --dev, the OpenAI stand-in (espeak-ng speech, its
phrase book as the STT), the worker by its real command with the production session
factory, ``python -m devtools.talk``, and Debian's Chromium headless whose microphone is a
WAV file (silence, then one phrase of the stand-in's phrase book, then silence). The page is
loaded with ``?agent=<id>`` and read through its automation state (``body.dataset``,
transcript lines with ``data-role``). A failure saves a screenshot under tests/artifacts/.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from devtools.chromium import BrowserError, Chromium
from devtools.openai_standin.hearing import DEFAULT_PHRASES
from devtools.processes import LiveKitServer, LocalConvex, OpenAIStandin, free_port
from devtools.speech import speak, wav_bytes
from tests.conftest import REPO, demo_agents, unavailable
from tests.e2e_support import Worker, services_env, start_worker
from tests.helpers import wait_for_async

ARTIFACTS = REPO / "tests" / "artifacts"
PHRASE = "What are your opening hours?"
MIC_RATE = 48000
LEAD_SILENCE_S = 12.0
"""Before the caller speaks: the agent joins and greets (a few seconds) in this time."""
TAIL_SILENCE_S = 90.0
"""After: longer than the test, so Chromium's looping capture never repeats the phrase."""
STEP_SECONDS = 60.0


@dataclass
class TalkServer:
    process: subprocess.Popen[str]
    url: str = ""
    lines: list[str] = field(default_factory=list)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        return self.process.returncode


def start_talk(env: dict[str, str]) -> TalkServer:
    process = subprocess.Popen(
        [sys.executable, "-m", "devtools.talk", "--port", "0"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    server = TalkServer(process)
    ready = threading.Event()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            server.lines.append(line.rstrip())
            if line.startswith("talk http://"):
                server.url = line.split(" ", 1)[1].strip()
                ready.set()

    threading.Thread(target=pump, daemon=True).start()
    if not ready.wait(60):
        server.stop()
        raise AssertionError("talk server never printed its address:\n" + "\n".join(server.lines[-30:]))
    return server


def microphone_wav(path: Path) -> Path:
    silence = bytes(2 * int(MIC_RATE * LEAD_SILENCE_S))
    tail = bytes(2 * int(MIC_RATE * TAIL_SILENCE_S))
    path.write_bytes(wav_bytes(silence + speak(PHRASE, sample_rate=MIC_RATE) + tail, MIC_RATE))
    return path


def agent_id_of(name: str, convex: LocalConvex) -> str:
    for agent in convex.call("query", "agents:list", {"limit": 100}):
        if agent["name"] == name:
            return str(agent["_id"])
    raise AssertionError(f"no demo agent {name} in {[a['name'] for a in demo_agents()]}")


def active_jobs(port: int) -> int:
    """Jobs the worker runs now, from livekit-agents' own ``/worker`` endpoint."""
    return int(json.loads(httpx.get(f"http://127.0.0.1:{port}/worker", timeout=5).text).get("active_jobs", 0))


async def until(check: Callable[[], Awaitable[Any]], what: str, seconds: float = STEP_SECONDS) -> Any:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` at the deadline."""
    return await wait_for_async(check, seconds, what=what, interval=0.2)


PAGE_STATE = """(() => ({
  state: document.body.dataset.callState,
  firstAudioMs: document.body.dataset.firstAudioMs,
  promptSource: document.body.dataset.promptSource,
  bursts: (document.body.dataset.agentBursts || "").split(",").filter(Boolean).map(Number),
  error: document.body.dataset.error,
  lines: [...document.querySelectorAll("[data-role]")].map((e) => ({
    role: e.dataset.role, text: e.textContent, final: e.dataset.final, at: Number(e.dataset.at || -1)
  })),
}))()"""


@pytest.fixture
def worker(livekit: LiveKitServer, convex: LocalConvex, openai_standin: OpenAIStandin) -> Iterator[tuple[Worker, int]]:
    http_port = free_port()
    started = start_worker(
        livekit,
        convex,
        AGENT_MODEL_FACTORY="agent.sessions.openai:openai_session",
        OPENAI_BASE_URL=openai_standin.base_url,
        OPENAI_API_KEY="standin",
        AGENT_HTTP_PORT=str(http_port),
    )
    yield started, http_port
    started.stop()


@pytest.fixture
def talk(livekit: LiveKitServer, convex: LocalConvex) -> Iterator[TalkServer]:
    server = start_talk(services_env(livekit, convex))
    yield server
    assert server.stop() == 0, "talk server did not exit cleanly on SIGTERM:\n" + "\n".join(server.lines[-20:])


@pytest_asyncio.fixture
async def browser(tmp_path: Path) -> AsyncIterator[Chromium]:
    try:
        chromium = await Chromium.start(microphone_wav=microphone_wav(tmp_path / "caller.wav"))
    except BrowserError as exc:
        unavailable(str(exc))
        raise
    yield chromium
    await chromium.aclose()


class CallPage:
    """The talk page as the test reads it: its automation state, nothing else."""

    def __init__(self, browser: Chromium) -> None:
        self.browser = browser

    async def state(self) -> dict[str, Any]:
        return dict(await self.browser.evaluate(PAGE_STATE))

    @staticmethod
    def lines(page: dict[str, Any], role: str) -> list[dict[str, Any]]:
        return [line for line in page["lines"] if line["role"] == role]

    async def connected(self) -> dict[str, Any] | None:
        page = await self.state()
        assert page.get("state") not in ("error", "ended"), f"the call failed: {page}"
        return page if page.get("state") == "connected" else None

    async def greeting_heard(self) -> dict[str, Any] | None:
        page = await self.state()
        return page if page.get("firstAudioMs") else None

    async def agent_said(self, words: str) -> dict[str, Any] | None:
        page = await self.state()
        return page if any(words in line["text"] for line in self.lines(page, "agent")) else None

    async def caller_line(self) -> dict[str, Any] | None:
        """The caller's first final transcript line."""
        page = await self.state()
        done = [line for line in self.lines(page, "caller") if line["final"] == "true" and line["text"].strip()]
        return done[0] if done else None

    async def heard_after(self, at_ms: float) -> dict[str, Any] | None:
        """The page once agent audio started (a burst) after ``at_ms`` into the call."""
        page = await self.state()
        return page if any(start > at_ms for start in page["bursts"]) else None

    async def ended(self) -> bool:
        return (await self.state()).get("state") == "ended"

    async def report(self, worker: Worker, talk: TalkServer) -> None:
        """Screenshot and what each side saw, for a failed run."""
        shot = ARTIFACTS / f"talk-{int(time.time())}.png"
        try:
            await self.browser.screenshot(shot)
            print(f"screenshot of the page: {shot}")
            print("page state:", json.dumps(await self.state(), indent=1)[:4000])
        except BrowserError as exc:
            print(f"no screenshot or page state: {exc}")
        print("browser console:\n" + "\n".join(self.browser.console[-30:]))
        print("worker:\n" + worker.tail(60))
        print("talk server:\n" + "\n".join(talk.lines[-30:]))


async def test_a_caller_talks_to_the_agent_in_the_browser_and_hanging_up_ends_its_job(
    worker: tuple[Worker, int], talk: TalkServer, browser: Chromium, convex: LocalConvex
) -> None:
    agent_worker, http_port = worker
    priya = agent_id_of("Priya", convex)
    greeting = next(a for a in demo_agents() if a["name"] == "Priya")["config"]["greeting"]
    assert PHRASE in DEFAULT_PHRASES, "the caller must say a phrase the stand-in's STT knows"
    call = CallPage(browser)

    async def jobs_running(count: int) -> bool:
        return await asyncio.to_thread(active_jobs, http_port) == count

    try:
        await browser.navigate(f"{talk.url}?agent={priya}")
        page = await until(call.connected, "the page to connect to the agent (callState connected)")
        assert page.get("promptSource") in ("ram", "host", "redis", "db", "build"), page
        page = await until(call.greeting_heard, "the greeting's audio above the level (dataset.firstAudioMs)")
        assert int(page["firstAudioMs"]) > 0
        await until(lambda: call.agent_said("Smile Bright Dental"), f"the greeting's words shown: {greeting!r}")
        said = await until(call.caller_line, "a final caller line (the stand-in's STT of the microphone)")
        assert said["text"].strip() == PHRASE, f"the caller's line is not the phrase spoken: {said}"
        await until(lambda: call.agent_said(PHRASE), "the agent's reply, which quotes the caller, shown")
        await until(lambda: call.heard_after(said["at"]), "the agent's reply heard after the caller's line")
        if os.environ.get("TALK_SCREENSHOT"):  # mid-conversation, for docs/talk.png (see docs/talk.md)
            await browser.screenshot(Path(os.environ["TALK_SCREENSHOT"]))
        assert await jobs_running(1), "the worker should be running the call's job"
        await browser.evaluate("document.getElementById('hangup').click()")
        await until(call.ended, "the page to show the call ended")
        await until(lambda: jobs_running(0), "the agent's job to end after the hang-up (worker /worker active_jobs 0)")
    except (AssertionError, BrowserError, TimeoutError):
        await call.report(agent_worker, talk)
        raise
