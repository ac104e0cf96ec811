"""The production session as stated in ``agent.sessions.openai``: the same local pipeline in
``dev`` and ``start``, realtime defaults that a realtime API accepts, and a greeting that
never asks a model."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from livekit.agents import inference
from livekit.plugins import openai

from agent.sessions.openai import openai_session
from agent.sessions.voice_options import PIPELINE_LLM_MODEL, REALTIME_MODEL, VoiceOptions
from services.records import AgentConfig, PromptResult

AGENT_ID = "a" * 32


def result_for(config: dict[str, Any]) -> PromptResult:
    agent = AgentConfig(AGENT_ID, "org", "Dana", config, 1_700_000_000_000.0)
    return PromptResult(prompt="You are Dana.", source="ram", updated_at=agent.updated_at, stale=False, agent=agent)


@pytest.fixture(autouse=True)
def _openai_key(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")  # built, never called
    yield


@pytest.mark.parametrize("mode", ["start", "dev"])
async def test_the_pipeline_turns_on_local_models_in_dev_mode_as_in_start(
    monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    """livekit-agents picks LiveKit Cloud's turn detector and adaptive interruption
    detection when ``LIVEKIT_DEV_MODE`` is set (``python -m agent dev``); the production
    session names the local ones either way."""
    if mode == "dev":
        monkeypatch.setenv("LIVEKIT_DEV_MODE", "1")
    else:
        monkeypatch.delenv("LIVEKIT_DEV_MODE", raising=False)
    plan = openai_session(result_for({"pipeline": "pipeline", "greeting": "Hi"}))
    try:
        detector = plan.session.turn_detection
        assert isinstance(detector, inference.TurnDetector)
        assert detector.model == "turn-detector-v1-mini"
        assert plan.session.interruption_detection == "vad"
        assert isinstance(plan.session.vad, inference.VAD)
        assert isinstance(plan.session.stt, openai.STT)
        assert isinstance(plan.session.tts, openai.TTS)
    finally:
        for closer in plan.closers:
            await closer()


async def test_a_realtime_agent_without_a_realtime_model_gets_the_realtime_default() -> None:
    for config in ({"pipeline": "realtime"}, {"pipeline": "realtime", "model": "gpt-4o-mini"}):
        plan = openai_session(result_for({**config, "voice": "verse", "temperature": 0.2}))
        try:
            assert isinstance(plan.session.llm, openai.realtime.RealtimeModel)
            assert plan.session.llm.model == REALTIME_MODEL
            assert plan.session.turn_detection == "realtime_llm"
            assert plan.voice is not None and plan.voice.temperature is None  # ignored by the realtime API
        finally:
            for closer in plan.closers:
                await closer()


def test_a_named_realtime_model_is_kept_and_a_pipeline_defaults_to_its_chat_model() -> None:
    named = VoiceOptions.from_config({"pipeline": "realtime", "model": "gpt-4o-realtime-preview"})
    assert named.llm_model == "gpt-4o-realtime-preview"
    pipeline = VoiceOptions.from_config({"temperature": 0.3, "language": "es-US", "greeting": "  Hola  "})
    assert (pipeline.pipeline, pipeline.llm_model, pipeline.temperature) == ("pipeline", PIPELINE_LLM_MODEL, 0.3)
    assert (pipeline.language, pipeline.greeting) == ("es", "Hola")
    assert VoiceOptions.from_config({"greeting": "   ", "temperature": True}).greeting is None
    assert VoiceOptions.from_config({"temperature": True}).temperature is None
