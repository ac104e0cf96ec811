"""The shared tier: prompts and a version index in Redis, through aiocache's Redis backend.

Under LiveKit's PROCESS executor every job is a fresh process with an empty RAM tier;
this tier is what lets such a job skip Convex. It holds

- ``p:<agentId>:<updatedAt>``: a prompt and the agent's config (expires after the
  stale-if-error window, so old versions do not pile up);
- ``v:<agentId>``: the newest version any process has seen, with when it was seen
  (only ever moved forward, by a Lua compare-and-set);
- ``hb``: the heartbeat of a running refresher: ``since`` (when its unbroken watch of
  the change feed began) and ``at`` (its last successful poll).

A version from ``v:`` is trusted only while a refresher's heartbeat is recent and its
watch began before that version was recorded: then any later edit would have moved
it. Redis failing never fails a join: every call here answers "nothing" instead, and
after a failure the tier rests for a few seconds rather than paying a timeout per call.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import structlog
from aiocache import RedisCache

from services import metrics
from services.models import AgentConfig, cache_key
from services.store import AgentVersion

log = structlog.get_logger(__name__)

_BUMP_VERSION = """
local cur = tonumber(redis.call('HGET', KEYS[1], 'u'))
local new = tonumber(ARGV[1])
if cur == nil or cur < new then
  redis.call('HSET', KEYS[1], 'u', ARGV[1], 'w', ARGV[2])
  return 1
elseif cur == new then
  redis.call('HSET', KEYS[1], 'w', ARGV[2])
end
return 0
"""


@dataclass(frozen=True, slots=True)
class SharedPrompt:
    prompt: str
    agent: AgentConfig
    loaded_at: float


@dataclass(frozen=True, slots=True)
class SharedVersion:
    updated_at: float
    confirmed_at: float


def _agent_to_json(agent: AgentConfig) -> dict[str, Any]:
    return {
        "agentId": agent.agent_id,
        "organizationId": agent.organization_id,
        "name": agent.name,
        "config": dict(agent.config),
        "updatedAt": agent.updated_at,
    }


def _agent_from_json(data: dict[str, Any]) -> AgentConfig:
    return AgentConfig(
        agent_id=str(data["agentId"]),
        organization_id=str(data["organizationId"]),
        name=str(data["name"]),
        config=dict(data["config"]),
        updated_at=float(data["updatedAt"]),
    )


class RedisTier:
    """Owned by the service loop: aiocache's client is bound to the loop that uses it."""

    def __init__(
        self,
        url: str,
        *,
        prompt_ttl_seconds: float,
        trust_seconds: float,
        namespace: str = "voiceagent:",
        op_timeout_seconds: float = 0.25,
        rest_seconds: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        parsed = urlparse(url)
        self._cache = RedisCache(
            endpoint=parsed.hostname or "127.0.0.1",
            port=parsed.port or 6379,
            db=int((parsed.path or "/0").lstrip("/") or 0),
            password=parsed.password,
            ssl=parsed.scheme == "rediss",
            namespace=namespace,
            timeout=op_timeout_seconds,
            create_connection_timeout=op_timeout_seconds,
        )
        self._prompt_ttl = max(int(prompt_ttl_seconds), 1)
        self._trust = trust_seconds
        self._rest = rest_seconds
        self._clock = clock
        self._resting_until = 0.0

    @property
    def available(self) -> bool:
        return self._clock() >= self._resting_until

    def _failed(self, operation: str, exc: BaseException) -> None:
        if self.available:
            log.warning("redis_tier_unavailable", operation=operation, error=type(exc).__name__, restSeconds=self._rest)
        self._resting_until = self._clock() + self._rest
        metrics.REDIS_ERRORS.labels(operation=operation).inc()

    async def get_prompt(self, agent_id: str, updated_at: float) -> SharedPrompt | None:
        if not self.available:
            return None
        try:
            data = await self._cache.get(f"p:{cache_key(agent_id, updated_at)}")
        except Exception as exc:  # noqa: BLE001 - any Redis failure degrades to the next tier
            self._failed("get_prompt", exc)
            return None
        if not isinstance(data, dict):
            return None
        try:
            agent = _agent_from_json(data["agent"])
            prompt = data["prompt"]
            loaded_at = float(data["loadedAt"])
        except (KeyError, TypeError, ValueError):
            return None  # written by an incompatible version: treat as absent
        if not isinstance(prompt, str) or agent.agent_id != agent_id or agent.updated_at != updated_at:
            return None
        return SharedPrompt(prompt, agent, loaded_at)

    async def put_prompt(self, agent_id: str, updated_at: float, prompt: str, agent: AgentConfig) -> None:
        if not self.available:
            return
        payload = {"prompt": prompt, "agent": _agent_to_json(agent), "loadedAt": self._clock()}
        try:
            await self._cache.set(f"p:{cache_key(agent_id, updated_at)}", payload, ttl=self._prompt_ttl)
        except Exception as exc:  # noqa: BLE001
            self._failed("put_prompt", exc)

    async def record_versions(self, versions: Iterable[AgentVersion]) -> None:
        """Move ``v:<agentId>`` forward to versions seen in the store just now."""
        if not self.available:
            return
        now = repr(self._clock())
        try:
            for version in versions:
                key = f"{self._cache.namespace}v:{version.agent_id}"
                await self._cache.raw("eval", _BUMP_VERSION, 1, key, repr(version.updated_at), now)
        except Exception as exc:  # noqa: BLE001
            self._failed("record_versions", exc)

    async def heartbeat(self, since: float) -> None:
        """Claim: every change from ``since`` until now has been recorded."""
        if not self.available:
            return
        try:
            await self._cache.set("hb", {"since": since, "at": self._clock()})
        except Exception as exc:  # noqa: BLE001
            self._failed("heartbeat", exc)

    async def get_version(self, agent_id: str, *, trusted_only: bool = True) -> SharedVersion | None:
        """The agent's current version if a live refresher vouches for it (or, with
        ``trusted_only=False``, the newest version recorded at all)."""
        if not self.available:
            return None
        try:
            beat = await self._cache.get("hb")
            raw = await self._cache.raw("hgetall", f"{self._cache.namespace}v:{agent_id}")
        except Exception as exc:  # noqa: BLE001
            self._failed("get_version", exc)
            return None
        try:
            updated_at, written_at = float(raw[b"u"]), float(raw[b"w"])
        except (KeyError, TypeError, ValueError):
            return None
        if not trusted_only:
            return SharedVersion(updated_at=updated_at, confirmed_at=written_at)
        try:
            since, at = float(beat["since"]), float(beat["at"])
        except (KeyError, TypeError, ValueError):
            return None
        if self._clock() - at > self._trust or written_at < since:
            return None
        return SharedVersion(updated_at=updated_at, confirmed_at=at)

    async def forget_agent(self, agent_id: str, versions: Iterable[float] = ()) -> None:
        """A deleted agent: drop ``v:<agentId>`` and the prompts of the versions named (and
        of the one ``v:`` pointed at), so no process finds it here again."""
        if not self.available:
            return
        version_key = f"{self._cache.namespace}v:{agent_id}"
        try:
            current = await self._cache.raw("hget", version_key, "u")
            stamps = {*versions, *([float(current)] if current is not None else [])}
            keys = [version_key, *(self._cache.build_key(f"p:{cache_key(agent_id, v)}") for v in stamps)]
            await self._cache.raw("delete", *keys)
        except Exception as exc:  # noqa: BLE001
            self._failed("forget_agent", exc)

    async def aclose(self) -> None:
        with contextlib.suppress(Exception):  # closing a dead connection is not an error
            await self._cache.close()
