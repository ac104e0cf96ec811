"""Was each served prompt the agent's current one? No I/O: versions in, verdicts out.

A join is wrong when the prompt it got is not the text of the version it claims, or
when a newer version had been committed more than ``bound_seconds`` before the join
started (``PROMPT_REFRESH_SECONDS`` plus round trips: the freshness the service
promises).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Served:
    agent_id: str
    started_at: float
    updated_at: float
    prompt_tag: str


@dataclass
class VersionHistory:
    """Every version of every agent: (committed_at, updated_at, prompt_tag), in order."""

    _versions: dict[str, list[tuple[float, float, str]]] = field(default_factory=dict)

    def add(self, agent_id: str, committed_at: float, updated_at: float, prompt_tag: str) -> None:
        versions = self._versions.setdefault(agent_id, [])
        versions.append((committed_at, updated_at, prompt_tag))
        versions.sort()

    def required(self, agent_id: str, at: float) -> tuple[float, float, str] | None:
        """The newest version committed at or before ``at``."""
        versions = self._versions.get(agent_id, [])
        index = bisect.bisect_right([v[0] for v in versions], at)
        return versions[index - 1] if index else None

    def tag_of(self, agent_id: str, updated_at: float) -> str | None:
        for _, stamp, tag in self._versions.get(agent_id, []):
            if stamp == updated_at:
                return tag
        return None


def is_wrong(served: Served, history: VersionHistory, bound_seconds: float) -> bool:
    if history.tag_of(served.agent_id, served.updated_at) != served.prompt_tag:
        return True  # the text does not belong to the version it claims (or no such version)
    required = history.required(served.agent_id, served.started_at - bound_seconds)
    return required is not None and served.updated_at < required[1]


def count_wrong(joins: list[Served], history: VersionHistory, bound_seconds: float) -> int:
    return sum(is_wrong(join, history, bound_seconds) for join in joins)
