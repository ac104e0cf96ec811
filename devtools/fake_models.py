"""A fake LLM behind the real ``llm.LLM`` interface, and session factories using it.

Its reply depends on its input: it names a hash of the system prompt it was given and
echoes the caller, so a test can prove which prompt an agent runs with.
``AGENT_MODEL_FACTORY=devtools.fake_models:fake_session`` puts it behind the real
worker (tests, the load test, or trying the worker without OpenAI).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from typing import Any

from livekit.agents import AgentSession, APIConnectOptions, get_job_context, llm, room_io
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, NOT_GIVEN, NotGivenOr
from livekit.agents.utils import shortuuid

from agent.sessions.factory import SessionPlan
from services.logging import prompt_fingerprint
from services.records import PromptResult


def prompt_tag(prompt: str) -> str:
    """The same fingerprint the worker logs as ``promptHash``, so probes and logs agree."""
    return prompt_fingerprint(prompt)


def reply_for(chat_ctx: llm.ChatContext) -> str:
    system = [m.text_content or "" for m in chat_ctx.messages() if m.role in ("system", "developer")]
    users = [m.text_content or "" for m in chat_ctx.messages() if m.role == "user"]
    heard = users[-1] if users else ""
    return f"prompt={prompt_tag(system[0] if system else '')} heard={heard}"


class FakeLLM(llm.LLM[Any]):
    def chat(
        self,
        *,
        chat_ctx: llm.ChatContext,
        tools: list[llm.Tool] | None = None,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
        parallel_tool_calls: NotGivenOr[bool] = NOT_GIVEN,
        tool_choice: NotGivenOr[llm.ToolChoice] = NOT_GIVEN,
        extra_kwargs: NotGivenOr[dict[str, Any]] = NOT_GIVEN,
    ) -> llm.LLMStream:
        return FakeLLMStream(self, chat_ctx=chat_ctx, tools=tools or [], conn_options=conn_options)


class FakeLLMStream(llm.LLMStream):
    async def _run(self) -> None:
        text = reply_for(self.chat_ctx)
        self._event_ch.send_nowait(
            llm.ChatChunk(id=shortuuid("fake-"), delta=llm.ChoiceDelta(role="assistant", content=text))
        )


def fake_session(result: PromptResult) -> SessionPlan:
    """Text in, text out: no audio models, so no audio tracks either."""
    session: AgentSession[None] = AgentSession(llm=FakeLLM())
    return SessionPlan(session, room_io.RoomOptions(audio_input=False, audio_output=False, text_input=True))


def recording_session(result: PromptResult) -> SessionPlan:
    """``fake_session`` that also appends what the job resolved to ``$PROBE_EVENTS`` (one
    JSON line per job), so a harness in another process can see each job's outcome. Its
    times are the worker's to log (``job_started``, ``job_ended``), not this probe's."""
    path = os.environ.get("PROBE_EVENTS")
    if path:
        room = ""
        with contextlib.suppress(RuntimeError):  # outside a job there is no job context
            room = get_job_context().job.room.name
        event = {
            "room": room,
            "agentId": result.agent.agent_id,
            "source": result.source,
            "stale": result.stale,
            "updatedAt": result.updated_at,
            "promptHash": prompt_tag(result.prompt),
            "pid": os.getpid(),
        }
        with open(path, "a", encoding="utf-8") as events:
            events.write(json.dumps(event) + "\n")
        end_after = os.environ.get("PROBE_END_JOB")
        if end_after:
            # A load test join is over once the prompt is in use: end the job that many
            # seconds later, so jobs (and PROCESS-mode processes) don't pile up.
            ctx = get_job_context()
            asyncio.get_running_loop().call_later(float(end_after), ctx.shutdown, "load test join done")
    return fake_session(result)
