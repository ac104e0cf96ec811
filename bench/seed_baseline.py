"""The seed design's code as written, for side-by-side figures: read Convex on every
call, then look the prompt up in a process-local dict keyed ``agentId:updatedAt``."""

from __future__ import annotations

import time
from typing import Any

import httpx

from prompts import build_full_prompt


class SeedAgentConfigService:
    def __init__(self, convex_url: str, deploy_key: str, ttl_seconds: float = 600) -> None:
        self._client = httpx.AsyncClient(base_url=convex_url, headers={"Authorization": f"Convex {deploy_key}"})
        self._cache: dict[str, tuple[str, float]] = {}
        self._ttl = ttl_seconds

    async def _load_agent_config(self, agent_id: str) -> dict[str, Any]:
        response = await self._client.post("/api/query", json={"path": "agents:get", "args": {"agentId": agent_id}})
        value: dict[str, Any] = response.json()["value"]
        return value

    async def get_full_prompt(self, agent_id: str) -> str:
        agent = await self._load_agent_config(agent_id)  # the seed's first line: a round trip per call
        key = f"{agent_id}:{agent['updatedAt']}"
        cached = self._cache.get(key)
        if cached is not None and time.time() - cached[1] < self._ttl:
            return cached[0]
        prompt = agent.get("fullPrompt") or build_full_prompt(agent)
        self._cache[key] = (prompt, time.time())
        return prompt

    async def aclose(self) -> None:
        await self._client.aclose()
