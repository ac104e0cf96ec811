"""Typed views of what the store returns, validated once at the boundary."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from services.errors import MalformedDocumentError

PromptSource = Literal["ram", "host", "redis", "db", "build"]


@dataclass(frozen=True, slots=True)
class AgentRecord:
    """An agent document as stored, reduced to what the worker uses."""

    agent_id: str
    organization_id: str
    name: str
    system_prompt: str
    config: Mapping[str, Any]
    updated_at: float
    full_prompt: str | None = field(default=None, repr=False)

    def as_document(self) -> dict[str, Any]:
        """The camelCase document the prompt builder takes."""
        return {
            "_id": self.agent_id,
            "organizationId": self.organization_id,
            "name": self.name,
            "systemPrompt": self.system_prompt,
            "config": dict(self.config),
            "updatedAt": self.updated_at,
        }


@dataclass(frozen=True, slots=True)
class AgentConfig:
    """What a job needs besides the prompt: who the agent is and how it speaks."""

    agent_id: str
    organization_id: str
    name: str
    config: Mapping[str, Any]
    updated_at: float

    @classmethod
    def from_record(cls, record: AgentRecord) -> AgentConfig:
        return cls(record.agent_id, record.organization_id, record.name, record.config, record.updated_at)

    def to_json(self) -> dict[str, Any]:
        """The form the shared tiers (host, Redis) store next to a prompt."""
        return {
            "agentId": self.agent_id,
            "organizationId": self.organization_id,
            "name": self.name,
            "config": dict(self.config),
            "updatedAt": self.updated_at,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AgentConfig:
        """Inverse of :meth:`to_json`; raises KeyError/TypeError/ValueError on a bad shape."""
        return cls(
            agent_id=str(data["agentId"]),
            organization_id=str(data["organizationId"]),
            name=str(data["name"]),
            config=dict(data["config"]),
            updated_at=float(data["updatedAt"]),
        )


@dataclass(frozen=True, slots=True)
class PromptResult:
    """A resolved prompt and where it came from. ``stale`` means past its TTL, served
    because the store failed; ``source`` then names the tier that held it."""

    prompt: str = field(repr=False)
    source: PromptSource
    updated_at: float
    stale: bool
    agent: AgentConfig


def _field(doc: Mapping[str, Any], key: str, kind: type | tuple[type, ...], agent_id: str) -> Any:
    value = doc.get(key)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise MalformedDocumentError(f"agent {agent_id!r}: field {key!r} is missing or malformed")
    return value


def parse_agent(doc: object, expected_id: str) -> AgentRecord:
    """Validate a document from any store; a malformed one never reaches a cache."""
    if not isinstance(doc, Mapping):
        raise MalformedDocumentError(f"agent {expected_id!r}: expected an object, got {type(doc).__name__}")
    agent_id = _field(doc, "_id", str, expected_id)
    if agent_id != expected_id:
        raise MalformedDocumentError(f"agent {expected_id!r}: store returned document {agent_id!r}")
    updated_at = float(_field(doc, "updatedAt", (int, float), expected_id))
    if not math.isfinite(updated_at):
        raise MalformedDocumentError(f"agent {expected_id!r}: updatedAt is not finite")
    config = _field(doc, "config", Mapping, expected_id)
    full_prompt = doc.get("fullPrompt")
    if full_prompt is not None and not isinstance(full_prompt, str):
        raise MalformedDocumentError(f"agent {expected_id!r}: fullPrompt is not a string")
    return AgentRecord(
        agent_id=agent_id,
        organization_id=_field(doc, "organizationId", str, expected_id),
        name=_field(doc, "name", str, expected_id),
        system_prompt=_field(doc, "systemPrompt", str, expected_id),
        config=MappingProxyType(dict(config)),
        updated_at=updated_at,
        full_prompt=full_prompt or None,
    )


def format_version(updated_at: float) -> str:
    """``updatedAt`` as text: whole milliseconds without a trailing ``.0``."""
    return str(int(updated_at)) if updated_at.is_integer() else repr(updated_at)


def cache_key(agent_id: str, updated_at: float) -> str:
    """``agentId:updatedAt`` as the seed wrote it (``j57...:1736842529000``)."""
    return f"{agent_id}:{format_version(updated_at)}"
