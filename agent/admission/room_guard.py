"""One agent per room: which agent participants of ours a room already has.

An agent of ours is a participant of kind AGENT whose ``lk.agent.name`` (set by
livekit-agents) or ``lk.agent_name`` (set by livekit-server 1.13) is this worker's
``AGENT_NAME``. It counts as *live* unless it carries a ``dispatchId`` attribute (the
worker sets it when it accepts a job) naming a dispatch the room no longer has: the
dispatcher withdrew that dispatch and livekit-server is terminating its job, so the
agent is leaving and must not block its replacement.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol, TypeVar

from livekit import api
from livekit.protocol import models

AGENT_NAME_ATTRIBUTES = ("lk.agent.name", "lk.agent_name")
DISPATCH_ID_ATTRIBUTE = "dispatchId"
AGENT_ID_ATTRIBUTE = "agentId"


class AgentLike(Protocol):
    """What both ``models.ParticipantInfo`` and ``rtc.RemoteParticipant`` tell us."""

    @property
    def identity(self) -> str: ...

    @property
    def attributes(self) -> Mapping[str, str]: ...

    @property
    def kind(self) -> int: ...


Participant = TypeVar("Participant", bound=AgentLike)


def is_agent_kind(kind: int) -> bool:
    return kind == models.ParticipantInfo.Kind.AGENT


def named(participant: AgentLike, agent_name: str) -> bool:
    return any(participant.attributes.get(key) == agent_name for key in AGENT_NAME_ATTRIBUTES)


def ours(participants: Iterable[Participant], agent_name: str) -> list[Participant]:
    """The participants that are agents of ``agent_name``: kind AGENT, named so."""
    return [p for p in participants if is_agent_kind(p.kind) and named(p, agent_name)]


def live_agents(agents: Iterable[AgentLike], live_dispatch_ids: set[str]) -> list[str]:
    """Identities of the given agents (already filtered to ours) that still count."""
    found = []
    for agent in agents:
        dispatch_id = agent.attributes.get(DISPATCH_ID_ATTRIBUTE, "")
        if not dispatch_id or dispatch_id in live_dispatch_ids:
            found.append(agent.identity)
    return found


async def dispatch_ids(lk: api.LiveKitAPI, room: str) -> set[str]:
    return {dispatch.id for dispatch in await lk.agent_dispatch.list_dispatch(room)}


async def room_live_agents(lk: api.LiveKitAPI, room: str, agent_name: str) -> list[str]:
    """Live agents of ``agent_name`` in ``room``, asking the server (one call, two if the
    room has an agent of ours)."""
    listed = await lk.room.list_participants(api.ListParticipantsRequest(room=room))
    agents = ours(listed.participants, agent_name)
    if not agents:
        return []
    return live_agents(agents, await dispatch_ids(lk, room))
