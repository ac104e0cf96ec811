"""The greeting: spoken with ``session.say`` (never an LLM round trip), from cached audio
when the worker has it.

An agent's greeting is fixed text in its config, so its audio is fixed per version and
voice. The worker's main process synthesizes it when a version is loaded (the
``on_request`` prefetch, the refresher's reload of an edited agent) and the service keeps
it in its tiers (``services.greeting_cache``: RAM, the host tier for PROCESS job
processes, Redis between hosts). A job plays it with ``say(text, audio=...)``; on a miss
it speaks through the session's live TTS and never waits for the cache.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Literal

import openai as openai_sdk
import structlog
from livekit import rtc

from agent.models import openai_client
from agent.voice_options import TTS_SAMPLE_RATE, VoiceOptions
from services import AgentConfigService
from services.greeting_cache import MAX_GREETING_BYTES, GreetingAudio, greeting_key
from services.models import AgentConfig

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
