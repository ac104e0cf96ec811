"""A leader lease in Redis: one holder at a time, kept by renewing before it expires.

``SET key holder NX PX ttl`` takes a free lease; a Lua compare-and-renew extends it
only while the key still names this holder, and a compare-and-delete gives it back.
Any answer other than "still ours" (another holder, the key gone, Redis failing) means
the lease is lost, and the caller steps down at once. Expiry is measured by the Redis
server alone: no two hosts' clocks are compared.
"""

from __future__ import annotations

import structlog
from redis.asyncio import Redis

log = structlog.get_logger(__name__)

# SET NX PX, after clearing a key no holder could have written: another type, or a
# string without expiry (a lease always has one). Garbage must not block the election.
_ACQUIRE = """
local kind = redis.call('TYPE', KEYS[1]).ok
if (kind ~= 'none' and kind ~= 'string') or (kind == 'string' and redis.call('PTTL', KEYS[1]) == -1) then
  redis.call('DEL', KEYS[1])
end
return redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2])
"""

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class RedisLease:
    def __init__(self, client: Redis, key: str, holder: str, ttl_ms: int) -> None:
        self._client = client
        self._key = key
        self._holder = holder
        self._ttl_ms = ttl_ms
        self._failing = False  # log a Redis failure once per streak, not on every attempt

    @property
    def ttl_ms(self) -> int:
        return self._ttl_ms

    async def acquire(self) -> bool:
        """Take the lease if nobody holds it; True if we hold it now."""
        try:
            taken = await self._client.eval(_ACQUIRE, 1, self._key, self._holder, str(self._ttl_ms))
        except Exception as exc:  # noqa: BLE001 - Redis failing: we do not hold it
            self._failed("acquire", exc)
            return False
        self._failing = False
        return bool(taken)

    async def renew(self) -> bool:
        """Extend the lease if it is still ours; False means lost (step down now)."""
        try:
            renewed = await self._client.eval(_RENEW, 1, self._key, self._holder, str(self._ttl_ms))
        except Exception as exc:  # noqa: BLE001
            self._failed("renew", exc)
            return False
        self._failing = False
        return bool(renewed == 1)

    async def release(self) -> None:
        """Give the lease back if it is ours, so a successor need not wait for expiry."""
        try:
            await self._client.eval(_RELEASE, 1, self._key, self._holder)
        except Exception as exc:  # noqa: BLE001
            self._failed("release", exc)

    def _failed(self, operation: str, exc: BaseException) -> None:
        if not self._failing:
            log.warning("lease_redis_failed", operation=operation, error=type(exc).__name__)
        self._failing = True
