"""The seed design's two figures, as code, for side-by-side runs.

``SeedAgentConfigService`` is the seed's ``getFullPrompt`` as written: read Convex on
every call, then look the prompt up in a process-local dict keyed ``agentId:updatedAt``.
``NoCacheService`` is the seed's "before": read the agent and build its prompt on
every join.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import httpx

from prompts import build_full_prompt


@dataclass(frozen=True, slots=True)
class Resolved:
    prompt: str
    updated_at: float
    built: bool
    cache_hit: bool = False


class _ConvexReader:
    def __init__(self, convex_url: str, deploy_key: str) -> None:
        self._client = httpx.AsyncClient(
            base_url=convex_url,
            headers={"Authorization": f"Convex {deploy_key}"},
            limits=httpx.Limits(max_connections=100),
            timeout=30,
        )

    async def load_agent(self, agent_id: str) -> dict[str, Any]:
        response = await self._client.post("/api/query", json={"path": "agents:get", "args": {"agentId": agent_id}})
        value: dict[str, Any] = response.json()["value"]
        return value

    async def aclose(self) -> None:
        await self._client.aclose()


class SeedAgentConfigService(_ConvexReader):
    def __init__(self, convex_url: str, deploy_key: str, ttl_seconds: float = 600) -> None:
        super().__init__(convex_url, deploy_key)
        self._cache: dict[str, tuple[str, float]] = {}
        self._ttl = ttl_seconds

    async def resolve(self, agent_id: str) -> Resolved:
        agent = await self.load_agent(agent_id)  # the seed's first line: a round trip per call
        key = f"{agent_id}:{agent['updatedAt']}"
        cached = self._cache.get(key)
        if cached is not None and time.time() - cached[1] < self._ttl:
            return Resolved(cached[0], float(agent["updatedAt"]), built=False, cache_hit=True)
        built = not agent.get("fullPrompt")
        prompt = agent.get("fullPrompt") or build_full_prompt(agent)
        self._cache[key] = (prompt, time.time())
        return Resolved(prompt, float(agent["updatedAt"]), built=built)

    async def get_full_prompt(self, agent_id: str) -> str:
        return (await self.resolve(agent_id)).prompt

    @property
    def cache_bytes(self) -> int:
        return sum(len(prompt.encode("utf-8")) for prompt, _ in self._cache.values())


class NoCacheService(_ConvexReader):
    async def resolve(self, agent_id: str) -> Resolved:
        agent = await self.load_agent(agent_id)
        return Resolved(build_full_prompt(agent), float(agent["updatedAt"]), built=True)
