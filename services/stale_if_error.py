"""Stale if error: what a join is served when the store fails.

The newest prompt any tier holds for the agent (RAM, then the host tier in a job
process, then Redis), if it is within the stale-if-error window; flagged stale once past
the TTL or superseded (:meth:`FreshnessRule.stale_result`). Never for a deleted agent:
an outage must not bring it back.
"""

from __future__ import annotations

from services.freshness.rule import FreshnessRule
from services.freshness.version_index import VersionIndex
from services.records import PromptResult
from services.tiers.host_role import NoHostTier
from services.tiers.protocols import LocalTier, SharedTier


async def newest_held(
    agent_id: str,
    *,
    rule: FreshnessRule,
    index: VersionIndex,
    ram: LocalTier,
    host: NoHostTier,
    redis: SharedTier | None,
) -> PromptResult | None:
    """The newest usable prompt the tiers hold for ``agent_id``, else ``None``."""
    if index.is_deleted(agent_id):
        return None
    current = index.get(agent_id)
    version = ram.held_version(agent_id)
    entry = ram.peek_held(agent_id)
    if version is not None and entry is not None:
        result = rule.stale_result(agent_id, version, entry.prompt, entry.agent, entry.loaded_at, "ram", current)
        if result is not None:
            return result
    held = host.newest(agent_id)
    if held is not None:
        host_version, found = held
        result = rule.stale_result(agent_id, host_version, found.prompt, found.agent, found.vouched_at, "host", current)
        if result is not None:
            return result
    if redis is None:
        return None
    candidates = [v for v in (current, version) if v is not None]
    shared_version = await redis.get_version(agent_id, trusted_only=False)
    if shared_version is not None:
        candidates.append(shared_version.updated_at)
    for candidate in sorted(set(candidates), reverse=True):
        shared = await redis.get_prompt(agent_id, candidate)
        if shared is not None:
            return rule.stale_result(
                agent_id, candidate, shared.prompt, shared.agent, shared.loaded_at, "redis", current
            )
    return None
