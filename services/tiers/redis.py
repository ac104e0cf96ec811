"""The shared tier: prompts and a version index in Redis (redis-py's asyncio client).

Under LiveKit's PROCESS executor every job is a fresh process with an empty RAM tier;
this tier is what lets such a job skip Convex. Under the namespace it holds

- ``:p:<agentId>:<updatedAt>``: a prompt and the agent's config as JSON (expires after
  the stale-if-error window, so old versions do not pile up). The extra colon is the
  layout aiocache gave these keys before; keeping it lets a rolling upgrade share them;
- ``v:<agentId>``: a hash, the newest version any process has seen (``u``) and when it
  was recorded (``w``, the Redis server's clock); only ever moved forward, by a Lua
  compare-and-set;
- ``watchers`` (sorted set, host -> expiry) and ``watch_since`` (hash, host -> start):
  one heartbeat per host that watches the change feed and records every row it sees.
- ``g:<agentId>``: the greeting audio of the agent's newest synthesized version, a JSON
  header line ``{key, updatedAt, sampleRate}`` then raw PCM (expires like a prompt;
  deleted with the agent).
  ``since`` is when that host's unbroken watch began; the entry is live until its
  expiry. Every stamp is taken from the Redis server's ``TIME``, so no two hosts'
  clocks are ever compared.

A version from ``v:`` is trusted only while some watcher is live and its watch began
before that version was recorded: then any later edit would have moved it.

Redis failing never fails a join: every call here answers "nothing" instead, and
after a connection failure the tier rests for a few seconds rather than paying a
timeout per call. A key written by something else (not JSON, a wrong type, a
non-finite number) is absent for that key only, and the next good write replaces it.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import structlog
from redis.asyncio import Redis

from services import metrics
from services.records import AgentConfig, cache_key
from services.redis_io import FAILURES, KEY_ERRORS, RedisConnection
from services.store.protocol import AgentVersion
from services.tiers.entry import TierEntry, encode_entry, parse_entry
from services.tiers.greeting import GreetingAudio, decode_greeting, encode_greeting

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class SharedVersion:
    updated_at: float
    confirmed_at: float
    """For a trusted version, when this process asked (its own clock); otherwise the
    recording's stamp on the Redis server's clock."""
    trusted: bool = True


def _finite(value: object) -> float | None:
    """``value`` as a finite float, or None (missing, garbage, NaN, infinite)."""
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _decode_prompt(raw: object, agent_id: str, updated_at: float) -> TierEntry | None:
    """A ``p:`` value, or None for anything this version of the code did not write."""
    if not isinstance(raw, (bytes, str)):
        return None
    try:
        entry = parse_entry(raw)
    except (ValueError, KeyError, TypeError):
        return None
    if entry.agent.agent_id != agent_id or entry.agent.updated_at != updated_at:
        return None
    return entry


class RedisTier:
    """Owned by the service loop: the asyncio client is bound to the loop that uses it."""

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
        self._redis = RedisConnection(url, op_timeout_seconds=op_timeout_seconds)
        self._scripts = self._redis.tier_scripts
        self._ns = namespace
        self._op_timeout = op_timeout_seconds
        self._prompt_ttl = max(int(prompt_ttl_seconds), 1)
        self._trust_ms = max(int(trust_seconds * 1000), 1)
        self._rest = rest_seconds
        self._clock = clock
        self._resting_until = 0.0

    @property
    def available(self) -> bool:
        return self._clock() >= self._resting_until

    @property
    def connection(self) -> RedisConnection:
        """The process's Redis, shared with the fleet's lease, cursor and channel."""
        return self._redis

    @property
    def client(self) -> Redis:
        """The pool itself (tests put garbage where the tier reads)."""
        return self._redis.client

    def key(self, name: str) -> str:
        return f"{self._ns}{name}"

    def _prompt_key(self, agent_id: str, updated_at: float) -> str:
        return f"{self._ns}:p:{cache_key(agent_id, updated_at)}"

    def _failed(self, operation: str, exc: BaseException) -> None:
        if self.available:
            log.warning("redis_tier_unavailable", operation=operation, error=type(exc).__name__, restSeconds=self._rest)
        self._resting_until = self._clock() + self._rest
        metrics.REDIS_ERRORS.labels(operation=operation).inc()

    def _bad_key(self, operation: str, exc: BaseException) -> None:
        log.warning("redis_key_unusable", operation=operation, error=type(exc).__name__)
        metrics.REDIS_ERRORS.labels(operation=operation).inc()

    async def get_prompt(self, agent_id: str, updated_at: float) -> TierEntry | None:
        if not self.available:
            return None
        try:
            raw = await self._redis.get(self._prompt_key(agent_id, updated_at))
        except KEY_ERRORS as exc:
            self._bad_key("get_prompt", exc)
            return None
        except FAILURES as exc:  # any Redis failure degrades to the next tier
            self._failed("get_prompt", exc)
            return None
        return _decode_prompt(raw, agent_id, updated_at)

    async def put_prompt(self, agent_id: str, updated_at: float, prompt: str, agent: AgentConfig) -> None:
        if not self.available:
            return
        payload = encode_entry(agent, prompt, self._clock())
        try:  # SET replaces a value of any type: a garbage key is overwritten here
            await self._redis.set(self._prompt_key(agent_id, updated_at), payload, ttl_seconds=self._prompt_ttl)
        except KEY_ERRORS as exc:
            self._bad_key("put_prompt", exc)
        except FAILURES as exc:
            self._failed("put_prompt", exc)

    async def record_versions(self, versions: Iterable[AgentVersion]) -> bool:
        """Move ``v:<agentId>`` forward to versions seen in the store just now.

        True if every version is recorded (a garbage key is overwritten, not an error);
        False if the tier rests or failed, so some may be missing."""
        if not self.available:
            return False
        rows = [v for v in versions if math.isfinite(v.updated_at)]
        if not rows:
            return True
        try:
            calls = [([self.key(f"v:{row.agent_id}")], [repr(row.updated_at)]) for row in rows]
            results = await self._redis.run_each(self._scripts.bump_version, calls)
        except FAILURES as exc:
            self._failed("record_versions", exc)
            return False
        errors = [r for r in results if isinstance(r, Exception)]
        if errors:
            self._bad_key("record_versions", errors[0])
            return False
        return True

    async def heartbeat(self, host: str, *, new_watch: bool) -> bool:
        """Claim for ``host``: every change since its watch began has been recorded.

        ``new_watch`` starts the watch over (after a gap in polling or recording): only
        versions recorded from now on are vouched for. The claim expires on its own
        after the trust window. False if it could not be made."""
        if not self.available:
            return False
        try:
            await self._scripts.heartbeat(
                keys=[self.key("watchers"), self.key("watch_since")],
                args=[host, str(self._trust_ms), "1" if new_watch else "0"],
            )
        except FAILURES as exc:
            self._failed("heartbeat", exc)
            return False
        return True

    async def end_watch(self, host: str) -> None:
        """Withdraw ``host``'s heartbeat (it stops polling the feed)."""
        if not self.available:
            return
        try:
            await self._scripts.end_watch(keys=[self.key("watchers"), self.key("watch_since")], args=[host])
        except FAILURES as exc:
            self._failed("end_watch", exc)

    async def get_version(self, agent_id: str, *, trusted_only: bool = True) -> SharedVersion | None:
        """The agent's current version if a live watcher vouches for it (or, with
        ``trusted_only=False``, the newest version recorded at all)."""
        if not self.available:
            return None
        try:
            raw = await self._scripts.get_version(
                keys=[self.key(f"v:{agent_id}"), self.key("watchers"), self.key("watch_since")]
            )
        except KEY_ERRORS as exc:
            self._bad_key("get_version", exc)
            return None
        except FAILURES as exc:
            self._failed("get_version", exc)
            return None
        if not isinstance(raw, list) or len(raw) != 3:
            return None
        updated_at, written_at = _finite(raw[0]), _finite(raw[1])
        if updated_at is None or written_at is None:
            return None
        trusted = raw[2] == 1
        if trusted:
            return SharedVersion(updated_at=updated_at, confirmed_at=self._clock(), trusted=True)
        if trusted_only:
            return None
        return SharedVersion(updated_at=updated_at, confirmed_at=written_at / 1000.0, trusted=False)

    async def get_greeting(self, agent_id: str, key: str) -> GreetingAudio | None:
        """The agent's greeting audio if Redis holds the one ``key`` names."""
        if not self.available:
            return None
        try:
            raw = await self._redis.get(self.key(f"g:{agent_id}"))
        except KEY_ERRORS as exc:
            self._bad_key("get_greeting", exc)
            return None
        except FAILURES as exc:
            self._failed("get_greeting", exc)
            return None
        if not isinstance(raw, bytes):
            return None
        try:
            return decode_greeting(raw, key)
        except (ValueError, KeyError, TypeError) as exc:
            self._bad_key("get_greeting", exc)
            return None

    async def put_greeting(self, agent_id: str, audio: GreetingAudio) -> None:
        if not self.available:
            return
        try:
            await self._redis.set(self.key(f"g:{agent_id}"), encode_greeting(audio), ttl_seconds=self._prompt_ttl)
        except KEY_ERRORS as exc:
            self._bad_key("put_greeting", exc)
        except FAILURES as exc:
            self._failed("put_greeting", exc)

    async def forget_agent(self, agent_id: str, versions: Iterable[float] = ()) -> None:
        """A deleted agent: drop ``v:<agentId>`` and the prompts of the versions named (and
        of the one ``v:`` pointed at), so no process finds it here again."""
        if not self.available:
            return
        version_key = self.key(f"v:{agent_id}")
        try:
            current = await self._redis.hget(version_key, "u")
            stamps = set(versions)
            known = _finite(current)
            if known is not None:
                stamps.add(known)
            keys = [version_key, self.key(f"g:{agent_id}"), *(self._prompt_key(agent_id, stamp) for stamp in stamps)]
            await self._redis.delete(*keys)
        except FAILURES as exc:
            self._failed("forget_agent", exc)

    async def aclose(self) -> None:
        with contextlib.suppress(*FAILURES):  # closing a dead connection is not an error
            await self._redis.aclose()
