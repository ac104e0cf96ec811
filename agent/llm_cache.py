"""The provider's prompt cache: a routing key per agent version, and what it saved.

OpenAI caches a prompt prefix of 1,024 tokens or more and routes requests with the same
``prompt_cache_key`` to the same cache. Every call of one agent version starts with the
same system prompt, so the key is derived from ``agentId:updatedAt`` (hashed: the key
leaves the process and names nothing) and changes with every edit.
"""

from __future__ import annotations

import hashlib

from livekit.agents import AgentSession, MetricsCollectedEvent
from livekit.agents.metrics import LLMMetrics, RealtimeModelMetrics

from services.metrics import LLM_CACHED_PROMPT_TOKENS, LLM_PROMPT_TOKENS
from services.models import cache_key

KEY_PREFIX = "agent-"


def prompt_cache_key(agent_id: str, updated_at: float) -> str:
    """``agent-`` and 32 hex digits of SHA-256 over ``agentId:updatedAt``: one per version."""
    digest = hashlib.sha256(cache_key(agent_id, updated_at).encode("utf-8")).hexdigest()
    return KEY_PREFIX + digest[:32]


class CachedTokens:
    """Adds up one session's prompt tokens read from the provider's cache.

    Fed by the session's ``metrics_collected`` events: ``LLMMetrics.prompt_cached_tokens``
    for a pipeline, ``input_token_details.cached_tokens`` for a realtime model. Each
    report also goes to the Prometheus counters.
    """

    def __init__(self) -> None:
        self.cached_tokens = 0
        self.prompt_tokens = 0

    def watch(self, session: AgentSession[None]) -> CachedTokens:
        session.on("metrics_collected", self._on_metrics)
        return self

    def _on_metrics(self, event: MetricsCollectedEvent) -> None:
        metrics = event.metrics
        if isinstance(metrics, LLMMetrics):
            self.add(metrics.prompt_tokens, metrics.prompt_cached_tokens)
        elif isinstance(metrics, RealtimeModelMetrics):
            self.add(metrics.input_tokens, metrics.input_token_details.cached_tokens)

    def add(self, prompt_tokens: int, cached_tokens: int) -> None:
        self.prompt_tokens += prompt_tokens
        self.cached_tokens += cached_tokens
        LLM_PROMPT_TOKENS.inc(prompt_tokens)
        LLM_CACHED_PROMPT_TOKENS.inc(cached_tokens)
