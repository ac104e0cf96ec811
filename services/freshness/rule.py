"""The freshness rule, written once for every tier.

- **Newest version only.** The version a join wants is the newest of the dispatch's hint
  and the version index's; a tier's entry for any other version is not an answer.
- **Fresh while confirmed less than TTL ago.** An entry is fresh while the later of its
  own load time and the index's confirmation of its version is younger than the TTL.
- **Stale if error.** When the store fails, an entry up to the stale-if-error window old
  is served, flagged stale once past the TTL or superseded by a newer version.
- **Deletes win.** Nothing at or before an agent's tombstone is written to a tier again.

No I/O: the rule reads the version index and an injected clock.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from services.freshness.version_index import VersionIndex
from services.records import AgentConfig, PromptResult, PromptSource


class FreshnessRule:
    def __init__(
        self,
        index: VersionIndex,
        *,
        ttl_seconds: float,
        stale_if_error_seconds: float,
        clock: Callable[[], float],
    ) -> None:
        self._index = index
        self.ttl_seconds = ttl_seconds
        self._stale_if_error_seconds = stale_if_error_seconds
        self._clock = clock

    def wanted_version(self, agent_id: str, hint: float | None) -> float | None:
        """The newest of the hint and the indexed version (``None`` if neither is known)."""
        known = self._index.get(agent_id)
        if hint is None or known is None:
            return hint if known is None else known
        return max(hint, known)

    def age(self, agent_id: str, version: float, loaded_at: float) -> float:
        """Seconds since the entry was loaded or its version last confirmed, whichever is later."""
        confirmed = self._index.confirmed_at(agent_id, version)
        return self._clock() - max(loaded_at, confirmed if confirmed is not None else -math.inf)

    def is_fresh(self, agent_id: str, version: float, loaded_at: float) -> bool:
        """On the RAM hit path: :meth:`age` inlined, one call fewer per join."""
        confirmed = self._index.confirmed_at(agent_id, version)
        if confirmed is not None and confirmed > loaded_at:
            loaded_at = confirmed
        return self._clock() - loaded_at < self.ttl_seconds

    def confirmed_fresh(self, agent_id: str, version: float) -> float | None:
        """When this process last confirmed ``version`` current, if less than TTL ago. For a
        shared tier, whose entries' own load times (another process's clock) prove nothing
        about later edits."""
        confirmed = self._index.confirmed_at(agent_id, version)
        if confirmed is None or self._clock() - confirmed >= self.ttl_seconds:
            return None
        return confirmed

    def deleted_since(self, agent_id: str, updated_at: float) -> bool:
        """True if the agent's tombstone is at or after ``updated_at``."""
        if not self._index.is_deleted(agent_id):
            return False
        tombstone = self._index.newest_stamp(agent_id)
        return tombstone is not None and tombstone >= updated_at

    def stale_result(
        self,
        agent_id: str,
        version: float,
        prompt: str,
        agent: AgentConfig,
        loaded_at: float,
        source: PromptSource,
        current: float | None,
    ) -> PromptResult | None:
        """What a tier's entry is worth once the store failed: ``None`` past the
        stale-if-error window, flagged stale past the TTL or once superseded by ``current``."""
        age = self.age(agent_id, version, loaded_at)
        if age > self._stale_if_error_seconds:
            return None
        superseded = current is not None and current > version
        return PromptResult(prompt, source, version, age >= self.ttl_seconds or superseded, agent)
