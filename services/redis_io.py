"""The Redis boundary: every Redis connection, script and failure class the service uses.

- **Connections and commands.** :class:`RedisConnection` is the client the shared tier,
  the lease and the fleet's cursor and channel share (short timeouts: Redis failing must
  never hold up a join), and every command they send; :meth:`RedisConnection.subscriber`
  is the one client the fleet's subscription blocks on.
- **Failures.** :data:`FAILURES` is Redis or the network failing (the tier rests, the
  fleet falls back to polling); :data:`KEY_ERRORS` is one key holding something this
  code did not write (that key is absent, everything else is served). Anything else is
  a bug and is not reported as "Redis unavailable".
- **Scripts.** Every Lua script is registered (``register_script``): calls send its SHA1
  (``EVALSHA``), and redis-py loads the script once when a server does not know it.
  Key layouts are documented with the tier (``tiers/redis.py``) and the lease
  (``freshness/lease.py``); other hosts of an older version share them.
"""

from __future__ import annotations

from collections.abc import Sequence

from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import DataError, NoScriptError, RedisError, ResponseError

__all__ = ["FAILURES", "KEY_ERRORS", "LeaseScripts", "RedisConnection", "TierScripts"]

FAILURES: tuple[type[Exception], ...] = (RedisError, OSError)
"""Redis or the network failing (a connection refused or reset, a timeout, a server error)."""

# Redis errors about one key (a wrong type, a script refusing garbage): that key is
# absent, the tier keeps serving every other key. Catch these before FAILURES.
KEY_ERRORS: tuple[type[Exception], ...] = (ResponseError, DataError)


class RedisConnection:
    """One process's Redis: a connection pool with a timeout on every operation, the
    registered scripts, and the plain commands the tier and the fleet send. Bound to the
    loop that uses it (the service loop). Errors are redis-py's: callers catch
    :data:`KEY_ERRORS` then :data:`FAILURES`."""

    def __init__(self, url: str, *, op_timeout_seconds: float) -> None:
        self.url = url
        self.client = Redis.from_url(url, socket_timeout=op_timeout_seconds, socket_connect_timeout=op_timeout_seconds)
        """The pool itself (tests use it to put garbage where the tier reads)."""
        self.tier_scripts = TierScripts(self.client)
        self.lease_scripts = LeaseScripts(self.client)

    async def get(self, key: str) -> bytes | None:
        value = await self.client.get(key)
        return value if isinstance(value, bytes) else None

    async def set(self, key: str, value: bytes, *, ttl_seconds: int) -> None:
        await self.client.set(key, value, ex=ttl_seconds)

    async def hget(self, key: str, field: str) -> bytes | None:
        value = await self.client.hget(key, field)
        return value if isinstance(value, bytes) else None

    async def delete(self, *keys: str) -> None:
        await self.client.delete(*keys)

    async def run_each(self, script: AsyncScript, calls: Sequence[tuple[list[str], list[str]]]) -> list[object]:
        """``script`` once per ``(keys, args)``, pipelined by SHA in one round trip; each
        result, or the exception that call raised. A server that does not know the
        script (restarted, or new) is sent it once, and the calls are made again."""
        results = await self._pipelined(script, calls)
        if any(isinstance(result, NoScriptError) for result in results):
            await self.client.script_load(script.script)
            results = await self._pipelined(script, calls)
        return results

    async def _pipelined(self, script: AsyncScript, calls: Sequence[tuple[list[str], list[str]]]) -> list[object]:
        pipe = self.client.pipeline(transaction=False)
        for keys, args in calls:
            pipe.evalsha(script.sha, len(keys), *keys, *args)
        results: list[object] = await pipe.execute(raise_on_error=False)
        return results

    async def set_and_publish(self, key: str, value: str, *, ttl_seconds: int, channel: str, message: str) -> None:
        """Store ``value`` and publish ``message``, in one round trip."""
        pipe = self.client.pipeline(transaction=False)
        pipe.set(key, value, ex=ttl_seconds)
        pipe.publish(channel, message)
        await pipe.execute()

    def subscriber(self) -> Redis:
        """A new client for one long-lived subscription: no read timeout (it waits for
        messages). The caller closes it."""
        return Redis.from_url(self.url, socket_connect_timeout=1.0, socket_timeout=None, health_check_interval=0)

    async def aclose(self) -> None:
        await self.client.aclose()


_NOW_MS = "local t = redis.call('TIME')\nlocal now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"

# A number Lua can compare: nil for missing, non-numeric, NaN or infinite values.
_FINITE = """
local function finite(x)
  local n = tonumber(x)
  if n == nil or n ~= n or n == math.huge or n == -math.huge then return nil end
  return n
end
"""

# KEYS[1] = v:<agent>; ARGV[1] = the version seen. Returns 1 if it moved forward.
_BUMP_VERSION = (
    _NOW_MS
    + _FINITE
    + """
if redis.call('TYPE', KEYS[1]).ok ~= 'hash' then redis.call('DEL', KEYS[1]) end
local cur = finite(redis.call('HGET', KEYS[1], 'u'))
local new = tonumber(ARGV[1])
if cur == nil or cur < new then
  redis.call('HSET', KEYS[1], 'u', ARGV[1], 'w', now)
  return 1
elseif cur == new then
  redis.call('HSET', KEYS[1], 'w', now)
end
return 0
"""
)

# KEYS[1] = watchers, KEYS[2] = watch_since; ARGV = host, ttl ms, "1" to start a new watch.
# Returns the watch's start (Redis ms).
_HEARTBEAT = (
    _NOW_MS
    + _FINITE
    + """
if redis.call('TYPE', KEYS[1]).ok ~= 'zset' then redis.call('DEL', KEYS[1]) end
if redis.call('TYPE', KEYS[2]).ok ~= 'hash' then redis.call('DEL', KEYS[2]) end
local expiry = finite(redis.call('ZSCORE', KEYS[1], ARGV[1]))
local since = finite(redis.call('HGET', KEYS[2], ARGV[1]))
if ARGV[3] == '1' or expiry == nil or expiry < now or since == nil then
  since = now
  redis.call('HSET', KEYS[2], ARGV[1], since)
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
for _, dead in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. now)) do
  redis.call('HDEL', KEYS[2], dead)
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. now)
return tostring(since)
"""
)

# KEYS[1] = watchers, KEYS[2] = watch_since; ARGV[1] = host. Ends that host's watch.
_END_WATCH = """
if redis.call('TYPE', KEYS[1]).ok == 'zset' then redis.call('ZREM', KEYS[1], ARGV[1]) end
if redis.call('TYPE', KEYS[2]).ok == 'hash' then redis.call('HDEL', KEYS[2], ARGV[1]) end
return 0
"""

# KEYS[1] = v:<agent>, KEYS[2] = watchers, KEYS[3] = watch_since.
# Returns {u, w, trusted} or nil when the agent has no (usable) record.
_GET_VERSION = (
    "#!lua flags=no-writes\n"  # a read: runs during a write pause and on replicas
    + _NOW_MS
    + _FINITE
    + """
if redis.call('TYPE', KEYS[1]).ok ~= 'hash' then return nil end
local u = finite(redis.call('HGET', KEYS[1], 'u'))
local w = finite(redis.call('HGET', KEYS[1], 'w'))
if u == nil or w == nil then return nil end
local trusted = 0
if redis.call('TYPE', KEYS[2]).ok == 'zset' and redis.call('TYPE', KEYS[3]).ok == 'hash' then
  for _, host in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. now, '+inf')) do
    local since = finite(redis.call('HGET', KEYS[3], host))
    if since ~= nil and since <= w then
      trusted = 1
      break
    end
  end
end
return {redis.call('HGET', KEYS[1], 'u'), redis.call('HGET', KEYS[1], 'w'), trusted}
"""
)


class TierScripts:
    """The shared tier's scripts, registered on its client."""

    def __init__(self, client: Redis) -> None:
        self.bump_version: AsyncScript = client.register_script(_BUMP_VERSION)
        self.heartbeat: AsyncScript = client.register_script(_HEARTBEAT)
        self.end_watch: AsyncScript = client.register_script(_END_WATCH)
        self.get_version: AsyncScript = client.register_script(_GET_VERSION)


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


class LeaseScripts:
    """The leader lease's scripts, registered on the shared client."""

    def __init__(self, client: Redis) -> None:
        self.acquire: AsyncScript = client.register_script(_ACQUIRE)
        self.renew: AsyncScript = client.register_script(_RENEW)
        self.release: AsyncScript = client.register_script(_RELEASE)
