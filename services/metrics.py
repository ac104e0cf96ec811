"""Prometheus metrics of prompt resolution.

Module-level by necessity: ``prometheus_client`` registers each metric once per
process in its default registry, which livekit-agents serves on ``prometheus_port``.
They are counters only ever added to, and gauges read from the service's ``stats()``;
nothing reads them back to make decisions.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from prometheus_client import Counter, Gauge, Histogram

from services.stats import ServiceStats

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

CACHE_ENTRIES = Gauge("agent_prompt_cache_entries", "Entries this process holds, by tier", ["tier"])
CACHE_BYTES = Gauge("agent_prompt_cache_bytes", "Bytes this process holds, by tier", ["tier"])
FLEET_LEADER = Gauge("agent_fleet_leader", "1 while this host polls the change feed for its fleet")


def export_stats(stats: Callable[[], ServiceStats]) -> None:
    """Serve ``stats()`` as gauges, read at each scrape. One service per worker process:
    the latest one built is the one exported."""
    CACHE_ENTRIES.labels(tier="ram").set_function(lambda: stats().ram_entries)
    CACHE_BYTES.labels(tier="ram").set_function(lambda: stats().ram_prompt_bytes)
    CACHE_ENTRIES.labels(tier="greeting").set_function(lambda: stats().greeting_entries)
    CACHE_BYTES.labels(tier="greeting").set_function(lambda: stats().greeting_bytes)
    CACHE_ENTRIES.labels(tier="host").set_function(lambda: stats().host_entries or 0)
    CACHE_BYTES.labels(tier="host").set_function(lambda: stats().host_bytes or 0)
    FLEET_LEADER.set_function(lambda: _is_leader(stats()))


def _is_leader(stats: ServiceStats) -> float:
    return 1.0 if stats.fleet is not None and stats.fleet.role == "leader" else 0.0
