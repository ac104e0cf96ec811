"""Create a test room for an agent, with a dispatch, and print how to join it.

    python -m devtools.devroom Priya            # a demo agent by name
    python -m devtools.devroom 000...10000agents --suffix my-test

Uses LIVEKIT_URL / LIVEKIT_API_KEY / LIVEKIT_API_SECRET (default: the local dev
server on 127.0.0.1:7880 that ``make worker`` starts) and AGENT_NAME (the worker's
explicit-dispatch name; empty means the worker takes every new room by itself).
Agents are looked up where the worker looks them up: Convex if CONVEX_URL is set,
else the embedded agents file (AGENTS_FILE; the demo agents when both are unset, as
``make worker`` does).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time

import httpx
from livekit import api

from agent.admission.targeting import room_name_for
from agent.dispatch import DispatchError, dispatch_agent
from agent.settings import server_api_url
from devtools.processes import DEMO_SEED
from services.agent_ids import AGENT_ID_PATTERN
from services.settings import ServiceSettings
from services.store.file import FileAgentStore


def list_agents(settings: ServiceSettings) -> list[dict[str, object]]:
    if settings.convex_url and settings.convex_deploy_key:
        response = httpx.post(
            f"{settings.convex_url}/api/query",
            json={"path": "agents:list", "args": {"limit": 1000}, "format": "json"},
            headers={"Authorization": f"Convex {settings.convex_deploy_key.get_secret_value()}"},
            timeout=10,
        )
        body = response.json()
        if body.get("status") != "success":
            raise SystemExit(f"devroom: agents:list failed: {body.get('errorMessage') or body}")
        return list(body["value"])
    store = FileAgentStore(settings.agents_file or DEMO_SEED)
    rows = asyncio.run(store.changed_since(0, 1000))
    records = [asyncio.run(store.get_agent(row.agent_id)) for row in rows]
    return [{"_id": r.agent_id, "name": r.name, "domain": r.config.get("domain")} for r in records if r]


def find_agent(wanted: str, agents: list[dict[str, object]]) -> str:
    if AGENT_ID_PATTERN.fullmatch(wanted):
        return wanted
    matches = [str(a["_id"]) for a in agents if str(a["name"]).lower() == wanted.lower()]
    if len(matches) != 1:
        names = ", ".join(f"{a['name']} ({a['_id']})" for a in agents)
        raise SystemExit(f"devroom: no single agent named {wanted!r}; known: {names}")
    return matches[0]


async def create_room(agent_id: str, suffix: str) -> None:
    url = os.environ.get("LIVEKIT_URL", "ws://127.0.0.1:7880")
    key = os.environ.get("LIVEKIT_API_KEY", "devkey")
    secret = os.environ.get("LIVEKIT_API_SECRET", "secret")
    agent_name = os.environ.get("AGENT_NAME", "")
    room = room_name_for(agent_id, suffix)
    async with api.LiveKitAPI(server_api_url(url), key, secret) as lk:
        await lk.room.create_room(api.CreateRoomRequest(name=room, empty_timeout=600))
        if agent_name:
            result = await dispatch_agent(lk, room, agent_id, agent_name=agent_name)
            print(f"agent: {result.agent_identity} ready after {result.seconds:.2f} s ({result.attempts} dispatch(es))")
    token = (
        api.AccessToken(key, secret)
        .with_identity(f"dev-user-{int(time.time())}")
        .with_grants(api.VideoGrants(room_join=True, room=room))
        .to_jwt()
    )
    print(f"room:  {room}")
    print(f"url:   {url}")
    print(f"token: {token}")
    print("join with any LiveKit client (e.g. `lk room join --url URL --token TOKEN`) and talk or chat on lk.chat")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("agent", help="agent id, or the name of an agent")
    parser.add_argument("--suffix", default=f"dev-{int(time.time())}", help="keeps the room unique per call")
    args = parser.parse_args()
    if not os.environ.get("CONVEX_URL") and not os.environ.get("AGENTS_FILE"):
        os.environ["AGENTS_FILE"] = str(DEMO_SEED)  # as `make worker` does: the same agents
    agent_id = find_agent(args.agent, list_agents(ServiceSettings.from_env()))
    try:
        asyncio.run(create_room(agent_id, args.suffix))
    except DispatchError as exc:
        print(f"devroom: {exc}", file=sys.stderr)
        return 1
    except (OSError, api.TwirpError) as exc:
        print(f"devroom: could not reach LiveKit: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
