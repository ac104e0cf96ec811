"""Single flight: concurrent misses for one key share one load.

Why: a burst of jobs for a cold agent must cost one store read, not one per job. Runs on
one event loop (the service loop); the load is shielded, so one caller giving up (its
job cancelled) does not cancel the load the others wait for.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Hashable
from typing import Any, Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class SingleFlight(Generic[K, V]):
    """At most one running load per key; later callers await the one in flight."""

    def __init__(self) -> None:
        self._inflight: dict[K, asyncio.Task[V]] = {}

    async def run(self, key: K, load: Callable[[], Coroutine[Any, Any, V]]) -> V:
        """``load()``'s result, started now unless a load for ``key`` is already running."""
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.get_running_loop().create_task(load())
            self._inflight[key] = task
            task.add_done_callback(lambda _t: self._inflight.pop(key, None))
        return await asyncio.shield(task)
