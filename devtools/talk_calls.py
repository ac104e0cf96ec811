"""The talk page's server side: which agents there are, and starting or ending a call.

The browser never sees the LiveKit API secret: it asks this module for a call and gets a
join token for one room, while the dispatch (``agent.dispatch.dispatch_agent``, the API a
platform backend calls) runs here in the background. The token comes back at once so the
browser joins the room while the agent is still being dispatched: the agent finds its
caller already there and the greeting is not held back by the caller's own connect.
Agents are read where the worker reads them (``services.store.factory``: Convex when
``CONVEX_URL`` is set, else the embedded agents file).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from dataclasses import dataclass, field
from typing import Any, Literal

import aiohttp
import structlog
from livekit import api

from agent.admission.targeting import room_name_for
from agent.dispatch import DispatchError, dispatch_agent
from agent.settings import server_api_url
from services.agent_ids import validate_agent_id
from services.errors import InvalidAgentIdError, StoreError
from services.store.protocol import AgentStore

log = structlog.get_logger(__name__)

LIST_LIMIT = 1000
"""Agents listed at most (a dev tool, not a directory)."""
ROOM_EMPTY_TIMEOUT_S = 120
"""A room nobody joined is closed by livekit-server after this long."""
DISPATCH_TIMEOUT_S = 20.0
"""Per dispatch attempt: a dev worker (``num_idle_processes`` is 0 in dev mode) starts
its executor, loads the prompt and builds the session within it."""

CallStatus = Literal["dispatching", "ready", "failed", "ended"]


class CallError(Exception):
    """A call cannot be started; ``status`` is the HTTP status the page gets."""

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class LiveKitAccess:
    """Where the LiveKit server is, and the credentials that stay on this side."""

    url: str
    api_key: str
    api_secret: str = field(repr=False)
    agent_name: str
    """The worker's explicit-dispatch name (``AGENT_NAME`` of the worker)."""


@dataclass(slots=True)
class Call:
    room: str
    agent_id: str
    identity: str
    status: CallStatus = "dispatching"
    error: str | None = None
    task: asyncio.Task[None] | None = None


async def list_agents(store: AgentStore) -> list[dict[str, Any]]:
    """Every live agent: id, name and what the page shows about it (never the prompt)."""
    agents: list[dict[str, Any]] = []
    for row in await store.changed_since(0, LIST_LIMIT):
        if row.deleted:
            continue
        record = await store.get_agent(row.agent_id)
        if record is None:
            continue
        config = record.config
        agents.append(
            {
                "id": record.agent_id,
                "name": record.name,
                "domain": str(config.get("domain") or ""),
                "pipeline": "realtime" if config.get("pipeline") == "realtime" else "pipeline",
                "greeting": str(config.get("greeting") or ""),
            }
        )
    return sorted(agents, key=lambda a: str(a["name"]).lower())


class Calls:
    """The calls this server started; ends them all on ``aclose``."""

    def __init__(self, access: LiveKitAccess, store: AgentStore) -> None:
        self._access = access
        self._store = store
        self._calls: dict[str, Call] = {}
        self._lk: api.LiveKitAPI | None = None

    @property
    def livekit_url(self) -> str:
        return self._access.url

    async def agents(self) -> list[dict[str, Any]]:
        return await list_agents(self._store)

    def _api(self) -> api.LiveKitAPI:
        if self._lk is None:  # made on the running loop (aiohttp sessions are loop-bound)
            access = self._access
            self._lk = api.LiveKitAPI(server_api_url(access.url), access.api_key, access.api_secret)
        return self._lk

    async def start(self, agent_id: object) -> dict[str, str]:
        """Create the room, mint the caller's token, start the dispatch; the page's answer."""
        try:
            valid_id = validate_agent_id(agent_id)
        except InvalidAgentIdError as exc:
            raise CallError(str(exc), status=400) from exc
        try:
            record = await self._store.get_agent(valid_id)
        except StoreError as exc:
            raise CallError(f"agents cannot be read: {exc}", status=503) from exc
        if record is None:
            raise CallError(f"no agent {valid_id}", status=404)
        suffix = f"talk-{secrets.token_hex(4)}"
        room = room_name_for(valid_id, suffix)
        identity = f"caller-{suffix}"
        try:
            await self._api().room.create_room(api.CreateRoomRequest(name=room, empty_timeout=ROOM_EMPTY_TIMEOUT_S))
        except (api.TwirpError, aiohttp.ClientError) as exc:
            raise CallError(f"LiveKit at {self._access.url} cannot create a room: {exc}", status=502) from exc
        call = Call(room=room, agent_id=valid_id, identity=identity)
        call.task = asyncio.create_task(self._dispatch(call), name=f"dispatch-{room}")
        self._calls[room] = call
        log.info("talk_call_started", room=room, agentId=valid_id)
        return {"url": self._access.url, "token": self._token(room, identity), "room": room, "identity": identity}

    def _token(self, room: str, identity: str) -> str:
        grants = api.VideoGrants(room_join=True, room=room, can_publish=True, can_subscribe=True)
        access = self._access
        return api.AccessToken(access.api_key, access.api_secret).with_identity(identity).with_grants(grants).to_jwt()

    async def _dispatch(self, call: Call) -> None:
        try:
            result = await dispatch_agent(
                self._api(), call.room, call.agent_id, agent_name=self._access.agent_name, timeout=DISPATCH_TIMEOUT_S
            )
        except DispatchError as exc:
            call.status, call.error = "failed", str(exc)[:300]
            log.warning("talk_dispatch_failed", room=call.room, agentId=call.agent_id, error=call.error)
            return
        if call.status == "dispatching":
            call.status = "ready"
        log.info("talk_agent_ready", room=call.room, agentId=call.agent_id, seconds=round(result.seconds, 3))

    def status(self, room: str) -> dict[str, str | None]:
        call = self._calls.get(room)
        if call is None:
            raise CallError(f"no call in room {room[:80]!r}", status=404)
        return {"room": room, "status": call.status, "error": call.error}

    async def hang_up(self, room: str) -> None:
        """End the call: stop dispatching and close the room, which ends the agent's job."""
        call = self._calls.pop(room, None)
        if call is None:
            raise CallError(f"no call in room {room[:80]!r}", status=404)
        await self._end(call)

    async def _end(self, call: Call) -> None:
        call.status = "ended"
        if call.task is not None and not call.task.done():
            call.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await call.task
        with contextlib.suppress(api.TwirpError, aiohttp.ClientError):  # already gone
            await self._api().room.delete_room(api.DeleteRoomRequest(room=call.room))
        log.info("talk_call_ended", room=call.room, agentId=call.agent_id)

    async def aclose(self) -> None:
        """End every call still open, then close the API client."""
        calls, self._calls = list(self._calls.values()), {}
        for call in calls:
            await self._end(call)
        if self._lk is not None:
            await self._lk.aclose()
            self._lk = None
