"""A fake LLM behind the real ``llm.LLM`` interface, and a session factory using it.

Its reply depends on its input: it names a hash of the system prompt it was given and
echoes the caller, so a test can prove which prompt an agent runs with.
``AGENT_MODEL_FACTORY=tests.fake_models:fake_session`` puts it behind the real worker.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

from livekit.agents import AgentSession, APIConnectOptions, llm, room_io
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, NOT_GIVEN, NotGivenOr
from livekit.agents.utils import shortuuid

from agent.models import SessionPlan
from services.models import AgentConfig


def prompt_tag(prompt: str) -> str:
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:16]


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


def recording_fake_session(agent: AgentConfig) -> SessionPlan:
    """``fake_session`` that also appends a line to ``$HARNESS_EVENTS`` when a job gets
    this far (its prompt resolved), so a harness can wait for it across processes."""
    path = os.environ.get("HARNESS_EVENTS")
    if path:
        with open(path, "a", encoding="utf-8") as events:
            events.write(json.dumps({"agentId": agent.agent_id, "pid": os.getpid()}) + "\n")
    return fake_session(agent)


def fake_session(agent: AgentConfig) -> SessionPlan:
    """Text in, text out: no audio models, so no audio tracks either."""
    session: AgentSession[None] = AgentSession(llm=FakeLLM())
    return SessionPlan(session, room_io.RoomOptions(audio_input=False, audio_output=False, text_input=True))
