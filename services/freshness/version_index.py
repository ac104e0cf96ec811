"""Which version of each agent is current, and since when we know it. No I/O.

Fed by loads (a version read from the store) and by the refresher (the change
feed). A successful poll of the feed confirms every version already in the index at
once: anything that had changed would have been in the feed. Versions only move
forward, so a late or repeated feed row cannot roll an agent back.

A deleted agent stays as a tombstone (its last stamp, flagged deleted): nothing older
than the tombstone can be recorded again, and the service treats the agent as absent.
"""

from __future__ import annotations

import threading

from services.tiers.ram_cache import LruDict


class VersionIndex:
    def __init__(self, max_agents: int = 100_000) -> None:
        self._versions: LruDict[str, tuple[float, float]] = LruDict(max_agents)  # id -> (updatedAt, confirmedAt)
        self._deleted: LruDict[str, float] = LruDict(max_agents)  # id -> the tombstone's updatedAt
        self._lock = threading.Lock()
        self._all_confirmed_at = float("-inf")

    def get(self, agent_id: str) -> float | None:
        """The current version of a live agent (``None`` if unknown or deleted)."""
        entry = self._versions.peek(agent_id)
        return None if entry is None else entry[0]

    def newest_stamp(self, agent_id: str) -> float | None:
        """The newest stamp seen for the agent, its tombstone included."""
        live, dead = self.get(agent_id), self._deleted.peek(agent_id)
        return max((s for s in (live, dead) if s is not None), default=None)

    def is_deleted(self, agent_id: str) -> bool:
        return self._deleted.peek(agent_id) is not None

    def observe_deleted(self, agent_id: str, updated_at: float) -> bool:
        """Record the agent's tombstone; True if it was not already known."""
        with self._lock:
            current = self._versions.peek(agent_id)
            if current is not None and current[0] > updated_at:
                return False  # a newer live version: the tombstone is from an older life
            known = self._deleted.peek(agent_id)
            self._versions.pop(agent_id, None)
            self._deleted[agent_id] = max(updated_at, known if known is not None else updated_at)
            return known is None

    def observe(self, agent_id: str, updated_at: float, confirmed_at: float) -> bool:
        """Record a version seen at ``confirmed_at``; True if it is newer than what we had."""
        with self._lock:
            current = self._versions.peek(agent_id)
            if current is not None and current[0] > updated_at:
                return False
            tombstone = self._deleted.peek(agent_id)
            if tombstone is not None:
                if tombstone >= updated_at:
                    return False  # read before the delete landed: the agent is gone
                self._deleted.pop(agent_id, None)
            self._versions[agent_id] = (updated_at, max(confirmed_at, current[1] if current else confirmed_at))
            return current is None or current[0] < updated_at

    def confirm_all(self, at: float) -> None:
        """A poll that started at ``at`` succeeded: every indexed version held until then."""
        self._all_confirmed_at = max(self._all_confirmed_at, at)

    def confirmed_at(self, agent_id: str, updated_at: float) -> float | None:
        """When ``updated_at`` was last known to be the agent's current version."""
        entry = self._versions.peek(agent_id)
        if entry is None or entry[0] != updated_at:
            return None
        return max(entry[1], self._all_confirmed_at)

    # Tombstones survive forget() and clear(): a deleted agent never comes back in the
    # store, and forgetting that it is gone would let an old cached copy be served.
    def forget(self, agent_id: str) -> None:
        self._versions.pop(agent_id, None)

    def clear(self) -> None:
        self._versions.clear()
        self._all_confirmed_at = float("-inf")
