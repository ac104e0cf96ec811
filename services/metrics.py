"""Prometheus metrics of prompt resolution.

Module-level by necessity: ``prometheus_client`` registers each metric once per
process in its default registry, which livekit-agents serves on ``prometheus_port``.
They are counters only ever added to; nothing reads them back to make decisions.
"""

from __future__ import annotations

import functools

from prometheus_client import Counter, Histogram

RESOLUTIONS = Counter(
    "agent_prompt_resolutions",
    "Prompt resolutions by the tier that answered",
    ["source", "stale"],
)
RESOLVE_SECONDS = Histogram(
    "agent_prompt_resolve_seconds",
    "Time from asking for a prompt to having it",
    ["source"],
    buckets=(0.0001, 0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
FAILURES = Counter("agent_prompt_failures", "Resolutions that raised", ["error"])
# kind: "unavailable" (outage, timeout), "unauthorized" (401/403: a wrong deploy key),
# "response" (an answer we cannot use), "malformed" (one agent's document is broken).
STORE_ERRORS = Counter("agent_store_errors", "Failed calls to the source of truth", ["operation", "kind"])
REDIS_ERRORS = Counter("agent_redis_tier_errors", "Failed calls to the Redis tier", ["operation"])
WRITEBACKS = Counter("agent_prompt_writebacks", "Legacy prompt write-backs", ["result"])
REFRESH_POLLS = Counter("agent_version_refresh_polls", "Version refresher polls", ["result"])
LLM_PROMPT_TOKENS = Counter("agent_llm_prompt_tokens", "Prompt tokens sent to the model provider")
LLM_CACHED_PROMPT_TOKENS = Counter(
    "agent_llm_prompt_cached_tokens", "Prompt tokens the model provider read from its prompt cache"
)


# The hit path's children, bound once: ``labels()`` per call costs more than the increment.
@functools.cache
def resolution_counter(source: str, stale: bool) -> Counter:
    return RESOLUTIONS.labels(source=source, stale="true" if stale else "false")


@functools.cache
def resolve_histogram(source: str) -> Histogram:
    return RESOLVE_SECONDS.labels(source=source)


FEED_ROWS_SKIPPED = Counter("agent_change_feed_rows_skipped", "Malformed change-feed rows skipped")
GREETINGS = Counter("agent_greetings", "Greetings spoken, by where their audio came from", ["source"])
