"""A leader lease in Redis: one holder at a time, kept by renewing before it expires.

``SET key holder NX PX ttl`` takes a free lease; a Lua compare-and-renew extends it
only while the key still names this holder, and a compare-and-delete gives it back.
Any answer other than "still ours" (another holder, the key gone, Redis failing) means
the lease is lost, and the caller steps down at once. Expiry is measured by the Redis
server alone: no two hosts' clocks are compared. Its scripts and failure classes are
the Redis boundary's (``services/redis_io.py``).

Why not redis-py's ``Lock``: its acquire is a bare ``SET NX PX``, so a key no holder
could have written (another type, or a string without expiry, left by anything else
sharing the Redis) would block every election until someone deletes it by hand. Our
acquire clears such a key first (``redis_io._ACQUIRE``). Renew and release are the same
compare-and-extend and compare-and-delete ``Lock`` uses (``reacquire``, ``release``), and
the holder is the host id rather than a random token, so an operator reading
``fleet:leader`` sees which host leads, as hosts of an older version write it.
"""

from __future__ import annotations

import structlog

from services.redis_io import FAILURES, LeaseScripts

log = structlog.get_logger(__name__)


class RedisLease:
    def __init__(self, scripts: LeaseScripts, key: str, holder: str, ttl_ms: int) -> None:
        self._scripts = scripts
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
            taken = await self._scripts.acquire(keys=[self._key], args=[self._holder, str(self._ttl_ms)])
        except FAILURES as exc:  # Redis failing: we do not hold it
            self._failed("acquire", exc)
            return False
        self._failing = False
        return bool(taken)

    async def renew(self) -> bool:
        """Extend the lease if it is still ours; False means lost (step down now)."""
        try:
            renewed = await self._scripts.renew(keys=[self._key], args=[self._holder, str(self._ttl_ms)])
        except FAILURES as exc:
            self._failed("renew", exc)
            return False
        self._failing = False
        return bool(renewed == 1)

    async def release(self) -> None:
        """Give the lease back if it is ours, so a successor need not wait for expiry."""
        try:
            await self._scripts.release(keys=[self._key], args=[self._holder])
        except FAILURES as exc:
            self._failed("release", exc)

    def _failed(self, operation: str, exc: BaseException) -> None:
        if not self._failing:
            log.warning("lease_redis_failed", operation=operation, error=type(exc).__name__)
        self._failing = True
