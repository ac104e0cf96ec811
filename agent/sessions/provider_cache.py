"""The provider's prompt cache: a routing key per agent version, and what it saved.

OpenAI caches a prompt prefix of 1,024 tokens or more and routes requests with the same
``prompt_cache_key`` to the same cache. Every call of one agent version starts with the
same system prompt, so the key is derived from ``agentId:updatedAt`` (hashed: the key
leaves the process and names nothing) and changes with every edit.
"""

from __future__ import annotations

import hashlib

from livekit.agents import AgentSession, SessionUsageUpdatedEvent
from livekit.agents.metrics import LLMModelUsage

from services.metrics import LLM_CACHED_PROMPT_TOKENS, LLM_PROMPT_TOKENS
from services.records import cache_key

KEY_PREFIX = "agent-"


def prompt_cache_key(agent_id: str, updated_at: float) -> str:
    """``agent-`` and 32 hex digits of SHA-256 over ``agentId:updatedAt``: one per version."""
    digest = hashlib.sha256(cache_key(agent_id, updated_at).encode("utf-8")).hexdigest()
    return KEY_PREFIX + digest[:32]


class CachedTokens:
    """One session's prompt tokens, and those the provider read from its cache.

    Fed by the session's ``session_usage_updated`` events (``metrics_collected`` is
    deprecated in livekit-agents 1.8.9 and warns once per subscriber): their running
    totals per LLM model add up ``LLMMetrics.prompt_cached_tokens`` for a pipeline and
    ``input_token_details.cached_tokens`` for a realtime model. Each increase also goes to
    the Prometheus counters.
    """

    def __init__(self) -> None:
        self.cached_tokens = 0
        self.prompt_tokens = 0

    def watch(self, session: AgentSession[None]) -> CachedTokens:
        session.on("session_usage_updated", self._on_usage)
        return self

    def _on_usage(self, event: SessionUsageUpdatedEvent) -> None:
        llm_usage = [usage for usage in event.usage.model_usage if isinstance(usage, LLMModelUsage)]
        self.update(
            prompt_tokens=sum(usage.input_tokens for usage in llm_usage),
            cached_tokens=sum(usage.input_cached_tokens for usage in llm_usage),
        )

    def update(self, *, prompt_tokens: int, cached_tokens: int) -> None:
        """Take the session's new running totals; count what they added."""
        LLM_PROMPT_TOKENS.inc(max(prompt_tokens - self.prompt_tokens, 0))
        LLM_CACHED_PROMPT_TOKENS.inc(max(cached_tokens - self.cached_tokens, 0))
        self.prompt_tokens = max(prompt_tokens, self.prompt_tokens)
        self.cached_tokens = max(cached_tokens, self.cached_tokens)
