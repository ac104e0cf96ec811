"""The Convex source of truth: the project's ``agents:*`` functions over HTTP."""

from __future__ import annotations

from services.errors import StoreResponseError
from services.records import AgentRecord, parse_agent
from services.store.convex_client import ConvexHttpClient
from services.store.protocol import AgentVersion, parse_feed_rows


class ConvexAgentStore:
    """Implements :class:`~services.store.protocol.AgentStore` on a :class:`ConvexHttpClient`."""

    def __init__(self, client: ConvexHttpClient) -> None:
        self._client = client

    async def get_agent(self, agent_id: str) -> AgentRecord | None:
        doc = await self._client.call("query", "agents:get", {"agentId": agent_id})
        return None if doc is None else parse_agent(doc, agent_id)

    async def changed_since(self, since_ms: float, limit: int) -> list[AgentVersion]:
        rows = await self._client.call("query", "agents:changedSince", {"since": since_ms, "limit": limit})
        return parse_feed_rows(rows, "agents:changedSince")

    async def save_prompt(
        self, agent_id: str, full_prompt: str, built_from_updated_at: float, template_version: int
    ) -> bool:
        result = await self._client.call(
            "mutation",
            "agents:savePrompt",
            {
                "agentId": agent_id,
                "fullPrompt": full_prompt,
                "builtFromUpdatedAt": built_from_updated_at,
                "templateVersion": template_version,
            },
        )
        if not isinstance(result, dict) or not isinstance(result.get("written"), bool):
            raise StoreResponseError("agents:savePrompt: malformed result")
        return bool(result["written"])

    async def aclose(self) -> None:
        await self._client.aclose()
