"""What one service holds and does, read in one place (:meth:`AgentConfigService.stats`)
and exported as Prometheus gauges (``services/metrics.py``). No I/O."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

FleetRole = Literal["leader", "follower"]


@dataclass(frozen=True, slots=True)
class FleetStats:
    host: str
    role: FleetRole
    subscribed: bool
    """Whether this host follows the leader's channel right now."""
    subscriptions: int
    """Times the channel was (re)subscribed."""
    own_polls: int
    """Change-feed polls this host made itself (as leader, or as a follower falling back)."""
    batches_applied: int
    """Leader batches this host applied instead of polling."""


@dataclass(frozen=True, slots=True)
class ServiceStats:
    ram_entries: int
    ram_prompt_bytes: int
    """UTF-8 size of the prompts the RAM tier holds (what the load test reports)."""
    greeting_entries: int
    greeting_bytes: int
    host_entries: int | None
    """The host tier's prompts (its owner only; ``None`` elsewhere)."""
    host_bytes: int | None
    fleet: FleetStats | None
    """With Redis and a refresher only."""
