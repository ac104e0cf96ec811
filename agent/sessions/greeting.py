"""The greeting: spoken with ``session.say`` (never an LLM round trip), from cached audio
when the worker has it.

An agent's greeting is fixed text in its config, so its audio is fixed per version and
voice. The worker's main process synthesizes it when a version is loaded (the
``on_request`` prefetch, the refresher's reload of an edited agent) and the service keeps
it in its tiers (``services.tiers.greeting``: RAM, the host tier for PROCESS job
processes, Redis between hosts). A job plays it with ``say(text, audio=...)``; on a miss
it speaks through the session's live TTS and never waits for the cache.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Literal

import openai as openai_sdk
import structlog
from livekit import rtc
from livekit.agents import AgentSession

from agent.sessions.factory import SessionPlan
from agent.sessions.openai import openai_client
from agent.sessions.voice_options import TTS_SAMPLE_RATE, VoiceOptions, greeting_text
from services import AgentConfigService, PromptResult, metrics
from services.records import AgentConfig
from services.tiers.greeting import MAX_GREETING_BYTES, GreetingAudio, greeting_key

log = structlog.get_logger(__name__)

GreetingSource = Literal["cache", "tts"]
FRAME_MS = 20
SYNTHESIS_TIMEOUT_SECONDS = 30.0


def key_for(agent: AgentConfig, voice: VoiceOptions) -> str:
    return greeting_key(agent.agent_id, agent.updated_at, tts_model=voice.tts_model, voice=voice.voice)


async def pcm_frames(audio: GreetingAudio) -> AsyncIterator[rtc.AudioFrame]:
    """The cached PCM as 20 ms frames, what ``say(audio=...)`` plays (paced by the room's
    audio output, not here)."""
    samples = audio.sample_rate * FRAME_MS // 1000
    step = samples * 2
    pcm = audio.pcm
    for start in range(0, len(pcm) - len(pcm) % 2, step):
        chunk = pcm[start : start + step]
        yield rtc.AudioFrame(chunk, audio.sample_rate, 1, len(chunk) // 2)


class GreetingSynthesizer:
    """Renders greetings with the speech API (``pcm``: the format the session's TTS asks
    for) and stores them through the service. Runs on the service loop of the worker's
    main process; one synthesis per key at a time."""

    def __init__(self, service: AgentConfigService) -> None:
        self._service = service
        self._client: openai_sdk.AsyncOpenAI | None = None
        self._in_flight: set[str] = set()

    async def on_version(self, agent: AgentConfig) -> None:
        """A service version listener: make sure this version's greeting is cached."""
        voice = VoiceOptions.from_config(agent.config, agent_id=agent.agent_id)
        if voice.greeting is None:
            return
        key = key_for(agent, voice)
        if key in self._in_flight or await self._service.shared_greeting_audio(agent.agent_id, key) is not None:
            return
        self._in_flight.add(key)
        try:
            async with asyncio.timeout(SYNTHESIS_TIMEOUT_SECONDS):
                pcm = await self._synthesize(voice.greeting, voice)
        except (openai_sdk.OpenAIError, TimeoutError) as exc:
            log.warning("greeting_synthesis_failed", agentId=agent.agent_id, error=type(exc).__name__)
            return
        finally:
            self._in_flight.discard(key)
        if pcm is None:
            log.warning("greeting_not_cached", agentId=agent.agent_id, reason="longer than the cache holds")
            return
        await self._service.store_greeting(agent.agent_id, GreetingAudio(key, agent.updated_at, TTS_SAMPLE_RATE, pcm))
        log.info("greeting_cached", agentId=agent.agent_id, updatedAt=agent.updated_at, audioBytes=len(pcm))

    async def _synthesize(self, text: str, voice: VoiceOptions) -> bytes | None:
        if self._client is None:
            self._client = openai_client()  # built on the service loop, which it then serves
        chunks: list[bytes] = []
        size = 0
        async with self._client.audio.speech.with_streaming_response.create(
            model=voice.tts_model, voice=voice.voice, input=text, response_format="pcm"
        ) as response:
            async for chunk in response.iter_bytes():
                size += len(chunk)
                if size > MAX_GREETING_BYTES:
                    return None
                chunks.append(chunk)
        return b"".join(chunks)


CALLER_LINK_SECONDS = 3.0
"""How long the greeting waits for the session to link the caller (then it goes anyway)."""


CallerLink = Literal["linked", "room_closed", "timed_out"]


async def caller_linked(session: AgentSession[None], room: rtc.Room, within: float) -> CallerLink:
    """Wait until the session's room I/O has linked the caller, at most ``within`` seconds,
    and no longer than the room is connected: a call hung up before its caller was linked
    ends now instead of holding its job, and its slot, for the rest of the wait (each call
    hung up as soon as its agent was ready held a slot 3 s: ``bench.loadtest --mode
    livekit``, docs/benchmarks.md). Says which came first.

    livekit links the caller asynchronously, just after ``session.start`` returns, and a
    transcript said before that is reset when the link is made: with the transcript sent
    as soon as it is known (``agent.sessions.openai.ROOM_OPTIONS``) the greeting's words never
    reached a caller who joined a few milliseconds late (seen in the browser test). The
    link has no event to await; it is polled."""
    deadline = time.monotonic() + within
    while session.room_io.linked_participant is None:
        if not room.isconnected():
            return "room_closed"
        if time.monotonic() >= deadline:
            return "timed_out"
        await asyncio.sleep(0.01)
    return "linked"


def greet(plan: SessionPlan, service: AgentConfigService | None, result: PromptResult) -> GreetingSource | None:
    """Speak the configured greeting with ``say`` (no LLM): from the cached audio of this
    version and voice if this process or the host tier holds it, else (or without a
    ``service`` to ask: the cache is off) through the live TTS."""
    text = greeting_text(result.agent.config) if plan.voice is None else plan.voice.greeting
    if text is None:
        return None
    # A factory that states no voice (text-only fakes) has no cached sound: it says the text.
    audio = None
    if service is not None and plan.voice is not None:
        audio = service.greeting_audio(result.agent.agent_id, key_for(result.agent, plan.voice))
    if audio is not None:
        plan.session.say(text, audio=pcm_frames(audio))
    else:
        plan.session.say(text)
    source: GreetingSource = "cache" if audio is not None else "tts"
    metrics.GREETINGS.labels(source=source).inc()
    return source
