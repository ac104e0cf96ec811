"""A stock worker: what this project's worker is measured against.

Written the way LiveKit's Python starter writes one (``examples/voice_agents/basic_agent.py``
shape): an ``AgentServer`` with livekit-agents' defaults (its default executor, load
function and idle processes), an ``rtc_session`` entrypoint, the same plugins as the
production session (OpenAI STT, LLM and TTS, each building its own client as the plugins
do by default; livekit's default VAD and turn detector), and the prompt read from Convex on
every join as the seed design does (``agents:get`` over Convex's HTTP API, no cache). The
greeting goes through the LLM, as the seed's code did (``generate_reply(instructions=...)``).

    python -m bench.stock_worker start     # same environment as the worker (.env.example)

The job's agent comes from the dispatch metadata (``{"agentId": ...}``) or the room name
``agent-<agentId>[--suffix]``. It publishes the ``promptSource`` attribute once its session
runs, so ``dispatch_agent`` sees it ready like the real worker.
"""

from __future__ import annotations

import json
import os
from typing import Any

import httpx
from livekit.agents import Agent, AgentServer, AgentSession, JobContext, cli
from livekit.plugins import openai

from prompts import build_full_prompt

AGENT_NAME = os.environ.get("AGENT_NAME", "")
HTTP_PORT: dict[str, Any] = {"port": int(os.environ["AGENT_HTTP_PORT"])} if os.environ.get("AGENT_HTTP_PORT") else {}
server = AgentServer(
    ws_url=os.environ.get("LIVEKIT_URL", ""),
    api_key=os.environ.get("LIVEKIT_API_KEY", ""),
    api_secret=os.environ.get("LIVEKIT_API_SECRET", ""),
    # livekit's default health port unless AGENT_HTTP_PORT names one (0: any free one),
    # as the worker does: two workers on one host cannot share a port.
    **HTTP_PORT,
)


def agent_id_of(ctx: JobContext) -> str:
    try:
        metadata = json.loads(ctx.job.metadata or "{}")
    except ValueError:
        metadata = {}
    if isinstance(metadata, dict) and isinstance(metadata.get("agentId"), str):
        return str(metadata["agentId"])
    return ctx.job.room.name.removeprefix("agent-").split("--", 1)[0]


async def load_agent(agent_id: str) -> dict[str, Any]:
    """The seed's ``getAgentConfig``: one Convex round trip per join."""
    url = os.environ["CONVEX_URL"]
    key = os.environ.get("CONVEX_DEPLOY_KEY", "")
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Convex {key}"}, timeout=10) as client:
        response = await client.post("/api/query", json={"path": "agents:get", "args": {"agentId": agent_id}})
        return dict(response.json()["value"])


@server.rtc_session(agent_name=AGENT_NAME)
async def entrypoint(ctx: JobContext) -> None:
    agent = await load_agent(agent_id_of(ctx))
    prompt = str(agent.get("fullPrompt") or build_full_prompt(agent))
    config: dict[str, Any] = dict(agent.get("config") or {})
    session: AgentSession[None] = AgentSession(
        stt=openai.STT(language=str(config.get("language", "en")).split("-")[0], use_realtime=True),
        llm=openai.LLM(model=str(config.get("model") or "gpt-4o-mini")),
        tts=openai.TTS(voice=str(config.get("voice") or "alloy")),
    )
    await session.start(agent=Agent(instructions=prompt), room=ctx.room)
    await ctx.room.local_participant.set_attributes({"agentId": str(agent["_id"]), "promptSource": "db"})
    greeting = config.get("greeting")
    if isinstance(greeting, str) and greeting:
        session.generate_reply(instructions=f"Greet the caller with exactly: {greeting}")


if __name__ == "__main__":
    cli.run_app(server)
