"""The model seam: one function turns a resolved prompt (and the agent's config) into a
ready session plan.

``AGENT_MODEL_FACTORY`` names it (``module:function``); production uses
:func:`openai_session`, tests swap in a fake LLM without touching the worker.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field

from livekit.agents import AgentSession, room_io
from livekit.plugins import openai
from openai import AsyncOpenAI

from agent.llm_cache import prompt_cache_key
from services.models import PromptResult


@dataclass
class SessionPlan:
    session: AgentSession[None]
    room_options: room_io.RoomOptions = field(default_factory=room_io.RoomOptions)


SessionFactory = Callable[[PromptResult], SessionPlan]


class ModelFactoryError(ValueError):
    """``AGENT_MODEL_FACTORY`` does not name a usable function, or a config cannot be served."""


def openai_session(result: PromptResult, *, client: AsyncOpenAI | None = None) -> SessionPlan:
    """A realtime model or an STT/LLM/TTS pipeline, as ``config.pipeline`` says.

    The pipeline's LLM sends ``prompt_cache_key`` (one per agent version, see
    :mod:`agent.llm_cache`); the system prompt is the agent's instructions, the first
    message of every request and the same bytes for a version. The realtime API takes no
    such key (it caches within a session). ``client`` is the test seam for the LLM's
    HTTP traffic.
    """
    config = result.agent.config
    model = str(config.get("model") or "gpt-4o-mini")
    voice = str(config.get("voice") or "alloy")
    temperature = config.get("temperature")
    language = str(config.get("language") or "en").split("-", 1)[0].lower() or "en"
    if config.get("pipeline") == "realtime":
        realtime = (
            openai.realtime.RealtimeModel(model=model, voice=voice)
            if temperature is None
            else openai.realtime.RealtimeModel(model=model, voice=voice, temperature=float(temperature))
        )
        return SessionPlan(AgentSession(llm=realtime))
    key = prompt_cache_key(result.agent.agent_id, result.updated_at)
    llm = (
        openai.LLM(model=model, prompt_cache_key=key, client=client)
        if temperature is None
        else openai.LLM(model=model, prompt_cache_key=key, client=client, temperature=float(temperature))
    )
    session: AgentSession[None] = AgentSession(
        stt=openai.STT(language=language, use_realtime=True),
        llm=llm,
        tts=openai.TTS(voice=voice),
    )
    return SessionPlan(session)


def load_session_factory(spec: str) -> SessionFactory:
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ModelFactoryError(f"AGENT_MODEL_FACTORY must look like module:function, got {spec!r}")
    try:
        factory = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise ModelFactoryError(f"AGENT_MODEL_FACTORY {spec!r}: {exc}") from exc
    if not callable(factory):
        raise ModelFactoryError(f"AGENT_MODEL_FACTORY {spec!r} is not callable")
    return factory  # type: ignore[no-any-return]
