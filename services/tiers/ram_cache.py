"""The RAM tier: aiocache's memory cache, bounded by LRU, safe across threads.

aiocache's memory backend keeps entries in a plain dict with no size bound, and its
TTL timers live on the event loop that wrote the entry (they never fire once a
THREAD-mode job's loop is closed). So this tier never passes a TTL to aiocache:
freshness is decided by the service when it reads an entry, with an injected
clock, and the size bound is enforced by the mapping aiocache stores into.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, MutableMapping
from typing import Any, Generic, TypeVar

from aiocache import SimpleMemoryCache

K = TypeVar("K")
V = TypeVar("V")


class LruDict(MutableMapping[K, V], Generic[K, V]):
    """A mapping that keeps at most ``max_entries`` items, dropping the least recently used.

    Reads through :meth:`get` or ``[]`` count as use. Every operation holds one lock, so
    jobs on different threads (each with its own event loop) can share it. No I/O, no
    clock: what an entry means is the caller's business.
    """

    def __init__(self, max_entries: int, on_evict: Callable[[K, V], None] | None = None) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries = max_entries
        self._data: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()
        self._on_evict = on_evict

    def __getitem__(self, key: K) -> V:
        with self._lock:
            value = self._data[key]
            self._data.move_to_end(key)
            return value

    def __setitem__(self, key: K, value: V) -> None:
        evicted: list[tuple[K, V]] = []
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.max_entries:
                evicted.append(self._data.popitem(last=False))
        if self._on_evict is not None:
            for old_key, old_value in evicted:
                self._on_evict(old_key, old_value)

    def __delitem__(self, key: K) -> None:
        with self._lock:
            del self._data[key]

    def __iter__(self) -> Iterator[K]:
        with self._lock:
            return iter(list(self._data))

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def pop(self, key: K, default: Any = None) -> Any:  # atomic, unlike MutableMapping.pop
        with self._lock:
            return self._data.pop(key, default)

    def peek(self, key: K) -> V | None:
        """Read without counting as use."""
        with self._lock:
            return self._data.get(key)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()


class BoundedMemoryCache(SimpleMemoryCache):  # type: ignore[misc]
    """``SimpleMemoryCache`` whose storage is an :class:`LruDict`.

    Build it with ``timeout=None``: aiocache's default timeout wraps every call in
    ``asyncio.wait_for`` (a task per lookup, about five times slower).
    """

    def __init__(self, max_entries: int, on_evict: Callable[[str, Any], None] | None = None) -> None:
        super().__init__(timeout=None)
        self._cache: LruDict[str, Any] = LruDict(max_entries, on_evict)

    async def _clear(self, namespace: str | None = None, _conn: object = None) -> bool:
        # aiocache replaces the dict on clear(); keep the bounded one.
        if namespace:
            for key in [k for k in self._cache if k.startswith(namespace)]:
                self._cache.pop(key, None)
        else:
            self._cache.clear()
        return True

    def __len__(self) -> int:
        return len(self._cache)

    # Synchronous access for callers that must not await (eviction bookkeeping, clears).
    def get_now(self, key: str) -> Any:
        """What ``await get(key)`` returns, counting as use, without aiocache's per-call
        stack (timeout, plugin hooks, a no-op serializer and three awaits: most of a hit's
        cost). For this memory backend the two are the same read of the same storage."""
        return self._cache.get(key)

    def peek(self, key: str) -> Any:
        return self._cache.peek(key)

    def discard(self, key: str) -> None:
        self._cache.pop(key, None)

    def clear_entries(self) -> None:
        self._cache.clear()

    def entries(self) -> list[Any]:
        return [value for key in self._cache if (value := self._cache.peek(key)) is not None]
