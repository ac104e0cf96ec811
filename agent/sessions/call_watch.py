"""What a job reports about its call, and the one thing a call's end must do.

- ``job_timings``: one event per job with the prompt, session, first-audio and first-reply
  times, the greeting's source and the provider's cached prompt tokens; logged at the
  first assistant reply, or at shutdown if none came;
- ``turn_metrics``: one event per conversation item that carries livekit's per-turn
  timings (the caller's turn: transcription and end-of-turn delays; the agent's: LLM
  first token, TTS first byte, end to end): where a reply's latency goes, never its text;
- the session's close (the caller hung up, or the session failed) shuts the job down.
  Left to livekit, the job would hold its slot until livekit-server closes the empty
  room (its departure timeout, 20 s), and a full worker turns callers away meanwhile;
- the call's end frees the job's slot at once (``agent.admission.ended_calls``): when the
  caller leaves (the moment livekit starts closing the session, half a second before
  it has closed) or the session closes, whichever comes first.
"""

from __future__ import annotations

import time
from typing import Any

import structlog
from livekit import rtc
from livekit.agents import AgentSession, JobContext
from livekit.agents.voice.events import AgentStateChangedEvent, CloseEvent, ConversationItemAddedEvent
from livekit.agents.voice.room_io.types import DEFAULT_CLOSE_ON_DISCONNECT_REASONS

from agent.admission.ended_calls import ENDED_CALLS, EndedCalls
from agent.sessions.greeting import GreetingSource
from agent.sessions.provider_cache import CachedTokens
from services.hints import clip

log = structlog.get_logger("agent.worker")

TURN_METRICS = {
    "transcription_delay": "transcriptionDelayMs",
    "end_of_turn_delay": "endOfTurnDelayMs",
    "llm_node_ttft": "llmTtftMs",
    "tts_node_ttfb": "ttsTtfbMs",
    "e2e_latency": "e2eLatencyMs",
}


def elapsed_ms(since: float) -> float:
    """Milliseconds since ``since`` (a ``time.perf_counter()`` reading), to 0.1 ms."""
    return round((time.perf_counter() - since) * 1000, 1)


class CallWatch:
    """Listens to one job's session. ``timings`` is the job's dict, filled as it goes."""

    def __init__(
        self,
        ctx: JobContext,
        agent_id: str,
        started: float,
        timings: dict[str, Any],
        cached: CachedTokens,
        ended_calls: EndedCalls = ENDED_CALLS,
    ) -> None:
        self._ctx, self._agent_id, self._started = ctx, agent_id, started
        self._timings, self._cached, self._ended_calls = timings, cached, ended_calls
        self._logged = False
        self.greeting_source: GreetingSource | None = None
        self.caller_identity: str | None = None
        """The caller the session linked; set by the job once the link is made."""
        self._first_audio_ms: float | None = None

    def attach(self, session: AgentSession[None]) -> None:
        session.on("conversation_item_added", self._on_item)
        session.on("agent_state_changed", self._on_state)
        session.on("close", self._on_close)
        self._ctx.room.on("participant_disconnected", self._on_participant_left)
        self._ctx.add_shutdown_callback(self._on_shutdown)

    def _log_timings(self, first_reply_ms: float | None) -> None:
        if self._logged:
            return
        self._logged = True
        log.info(
            "job_timings",
            room=self._ctx.job.room.name,
            agentId=self._agent_id,
            promptResolvedMs=self._timings.get("promptResolvedMs"),
            sessionStartedMs=self._timings.get("sessionStartedMs"),
            firstReplyMs=first_reply_ms,
            firstAudioMs=self._first_audio_ms,
            greetingSource=self.greeting_source,
            promptCachedTokens=self._cached.cached_tokens,
        )

    def _on_item(self, event: ConversationItemAddedEvent) -> None:
        role = getattr(event.item, "role", None)
        if role == "assistant":
            self._log_timings(elapsed_ms(self._started))
        log_turn_metrics(self._agent_id, self._ctx.job.room.name, role, getattr(event.item, "metrics", None))

    def _on_state(self, event: AgentStateChangedEvent) -> None:
        if event.new_state == "speaking" and self._first_audio_ms is None:
            self._first_audio_ms = elapsed_ms(self._started)  # the agent's first audio frame went out

    def _on_participant_left(self, participant: rtc.RemoteParticipant) -> None:
        """The caller left for a reason that makes livekit close the session (the same
        list its room I/O uses): the call is over."""
        if (
            self.caller_identity is not None
            and participant.identity == self.caller_identity
            and participant.disconnect_reason in DEFAULT_CLOSE_ON_DISCONNECT_REASONS
        ):
            self._call_ended("caller_left")

    def _on_close(self, event: CloseEvent) -> None:
        self._call_ended("session_closed")
        self._ctx.shutdown(reason=f"session closed: {event.reason.value}")

    def _call_ended(self, how: str) -> None:
        if self._ended_calls.mark(self._ctx.job.id):
            log.info("call_ended", room=clip(self._ctx.job.room.name), agentId=self._agent_id, how=how,
                     durationMs=elapsed_ms(self._started))  # fmt: skip

    async def _on_shutdown(self) -> None:
        self._log_timings(None)


def log_turn_metrics(agent_id: str, room: str, role: object, metrics: object) -> None:
    if not isinstance(metrics, dict):
        return
    fields = {name: round(float(metrics[key]) * 1000, 1) for key, name in TURN_METRICS.items() if key in metrics}
    if fields:
        log.info("turn_metrics", room=clip(room), agentId=agent_id, role=str(role), **fields)
