"""The model seam: one function turns a resolved prompt (and the agent's config) into a
ready session plan.

``AGENT_MODEL_FACTORY`` names it (``module:function``); production uses
:func:`agent.sessions.openai.openai_session`, tests swap in a fake LLM without touching
the worker.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from livekit.agents import AgentSession, room_io

from agent.sessions.voice_options import VoiceOptions
from services.records import PromptResult


@dataclass
class SessionPlan:
    session: AgentSession[None]
    room_options: room_io.RoomOptions = field(default_factory=room_io.RoomOptions)
    voice: VoiceOptions | None = None
    """How the session speaks, when it speaks (the greeting's cache key is built from it)."""
    closers: list[Callable[[], Coroutine[Any, Any, None]]] = field(default_factory=list)
    """Run at the job's end: what the factory opened for this session (its HTTP client)."""


SessionFactory = Callable[[PromptResult], SessionPlan]


class ModelFactoryError(ValueError):
    """``AGENT_MODEL_FACTORY`` does not name a usable function, or a config cannot be served."""


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
