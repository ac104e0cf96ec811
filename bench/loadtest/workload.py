"""The workload: which agents exist, which one each join asks for, which get edited.
Pure and seeded: the same arguments give the same plan."""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from typing import Any

from prompts import build_full_prompt, load_templates, template_version

BASE_TIME_MS = 1_767_225_600_000.0  # 2026-01-01, the seed's epoch


@dataclass(frozen=True)
class Workload:
    agents: int = 50
    zipf: float = 1.1
    joins: int = 500
    concurrency: int = 8
    edits_per_minute: float = 30.0
    latency_ms: float = 100.0
    seed: int = 7
    refresh_seconds: float = 2.0
    legacy_fraction: float = 0.0
    deletes_per_minute: float = 0.0
    rate: float = 0.0
    """Joins arriving per second (Poisson), at most ``concurrency`` served at once; 0: a
    closed loop, where each of ``concurrency`` callers starts its next join when the last ends."""

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def zipf_weights(count: int, exponent: float) -> list[float]:
    """Popularity of the agent ranked k (1-based) is proportional to 1 / k**exponent."""
    if count < 1:
        raise ValueError("at least one agent is needed")
    return [1.0 / (rank**exponent) for rank in range(1, count + 1)]


def join_plan(workload: Workload) -> list[int]:
    """The agent index each join asks for, in order."""
    rng = random.Random(workload.seed)
    weights = zipf_weights(workload.agents, workload.zipf)
    return rng.choices(range(workload.agents), weights=weights, k=workload.joins)


def arrival_offsets(workload: Workload) -> list[float] | None:
    """When each join arrives, in seconds from the start of the run (``None`` for a closed
    loop). Open-loop arrivals make every strategy run for the same time, so figures that
    follow the clock (refresher polls, edits and their reloads) compare per join; in a
    closed loop the slower strategy runs longer and pays more of them."""
    if workload.rate <= 0:
        return None
    rng = random.Random(workload.seed * 15_485_863 + 5)  # a stream of its own, like edits and deletes
    offsets, clock = [], 0.0
    for _ in range(workload.joins):
        clock += rng.expovariate(workload.rate)
        offsets.append(clock)
    return offsets


def edit_picker(workload: Workload) -> random.Random:
    """A separate stream for edits, so changing the edit rate leaves the joins alone."""
    return random.Random(workload.seed * 7919 + 1)


def delete_picker(workload: Workload) -> random.Random:
    """A stream for deletes of its own, so adding deletes leaves joins and edits alone."""
    return random.Random(workload.seed * 104_729 + 3)


def pick_agent(rng: random.Random, workload: Workload) -> int:
    return rng.choices(range(workload.agents), weights=zipf_weights(workload.agents, workload.zipf), k=1)[0]


def seed_agents(workload: Workload) -> list[dict[str, Any]]:
    """Agent documents for the local backend's seed, round-robin over the domains.
    A ``legacy_fraction`` of them (spread evenly) has no ``fullPrompt``."""
    domains = sorted(load_templates()["domains"])
    languages = ["en-US", "es-ES", "fr-FR", "de-DE", "hi-IN", "pt-BR"]
    docs = []
    legacy_every = round(1 / workload.legacy_fraction) if workload.legacy_fraction > 0 else 0
    for index in range(workload.agents):
        stamp = BASE_TIME_MS + index * 1000
        doc: dict[str, Any] = {
            "organizationId": f"org_{index % 5}",
            "name": f"Agent {index}",
            "systemPrompt": f"You answer calls for business number {index}. Be brief and kind.",
            "config": {
                "domain": domains[index % len(domains)],
                "language": languages[index % len(languages)],
                "voice": "alloy",
                "model": "gpt-4o-mini",
            },
            "createdAt": stamp,
            "updatedAt": stamp,
        }
        if not (legacy_every and index % legacy_every == 0):
            doc |= {"fullPrompt": build_full_prompt(doc), "promptVersion": stamp, "templateVersion": template_version()}
        docs.append(doc)
    return docs
