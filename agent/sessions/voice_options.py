"""What an agent's config says about how it listens and speaks, with the defaults stated.

One reading of ``config`` serves both the session factory (``agent.sessions.openai``) and the
greeting cache (``agent.sessions.greeting``): the greeting's audio is keyed by the same voice and
TTS model the session would speak with, so a cached greeting sounds like the live one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import structlog

log = structlog.get_logger(__name__)

PIPELINE_LLM_MODEL = "gpt-4o-mini"
"""The pipeline's LLM when the config names none (the seed's agents use it)."""
REALTIME_MODEL = "gpt-realtime"
"""The realtime model when the config names none, or names one that is not a realtime
model (``openai.realtime.RealtimeModel``'s own default in livekit-plugins-openai 1.8.9)."""
STT_MODEL = "gpt-4o-mini-transcribe"
"""livekit-plugins-openai's default transcription model, served over the realtime
transcription websocket (``use_realtime=True``: interim results, server-side end of speech)."""
TTS_MODEL = "gpt-4o-mini-tts"
"""livekit-plugins-openai's default speech model."""
VOICE = "alloy"
"""A voice both the speech API and the realtime API offer."""
TTS_SAMPLE_RATE = 24000
"""The speech API's ``pcm`` format: raw s16le, mono, 24 kHz (no decoder on the call's path)."""

Pipeline = Literal["pipeline", "realtime"]


@dataclass(frozen=True, slots=True)
class VoiceOptions:
    """The models and voice one agent version runs with."""

    pipeline: Pipeline
    llm_model: str
    """The chat model (pipeline) or the realtime model (realtime)."""
    voice: str
    tts_model: str
    stt_model: str
    language: str
    """ISO 639-1, as the transcription API wants it (``en-US`` -> ``en``)."""
    temperature: float | None
    """Pipeline only: the realtime API ignores it (livekit documents it as unused)."""
    greeting: str | None

    @classmethod
    def from_config(cls, config: Mapping[str, Any], *, agent_id: str = "") -> VoiceOptions:
        pipeline: Pipeline = "realtime" if config.get("pipeline") == "realtime" else "pipeline"
        model = _text(config.get("model"))
        if pipeline == "realtime":
            if model is not None and "realtime" not in model:
                # A chat model cannot hold a realtime session; the call still gets an agent.
                log.warning("config_model_ignored", agentId=agent_id, reason="not a realtime model", model=model[:64])
                model = None
            llm_model = model or REALTIME_MODEL
        else:
            llm_model = model or PIPELINE_LLM_MODEL
        temperature = config.get("temperature")
        language = (_text(config.get("language")) or "en").split("-", 1)[0].lower() or "en"
        return cls(
            pipeline=pipeline,
            llm_model=llm_model,
            voice=_text(config.get("voice")) or VOICE,
            tts_model=_text(config.get("ttsModel")) or TTS_MODEL,
            stt_model=_text(config.get("sttModel")) or STT_MODEL,
            language=language,
            temperature=float(temperature)
            if pipeline == "pipeline" and isinstance(temperature, int | float) and not isinstance(temperature, bool)
            else None,
            greeting=greeting_text(config),
        )


def greeting_text(config: Mapping[str, Any]) -> str | None:
    """The config's greeting, trimmed; None when there is none to say."""
    return _text(config.get("greeting"))


def _text(value: object) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None
