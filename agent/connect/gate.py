"""One room connect at a time per process, without a lock that can be lost.

Under THREAD, jobs are threads with their own event loops in one process. With many of
them connecting at once on a busy host, livekit's rtc core (1.1.21) can fail to complete a
connect handshake ("timed out waiting for ReadyForRoomEventRequest after
ConnectCallback"), then panics and SIGTERMs the process: every call of the worker ends.
Reproduced here with no connect ever cancelled (16 calls at a time, 8 slots, 2 CPUs).

The gate is a turn, not a blocking lock: a waiter polls (``asyncio.sleep``), so cancelling
it leaves nothing behind (``asyncio.to_thread(lock.acquire)`` leaves a thread that takes
the lock later and never gives it back); the holder's turn expires after
``max_hold_seconds``, so a connect that never returns cannot stop the worker. Pure
bookkeeping under a ``threading.Lock`` held for microseconds; the clock is injected.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
import time
from collections.abc import AsyncIterator, Callable


class ConnectGate:
    def __init__(
        self,
        max_hold_seconds: float = 10.0,
        poll_seconds: float = 0.01,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_hold_seconds, self.poll_seconds, self._clock = max_hold_seconds, poll_seconds, clock
        self.width = 1
        """Turns at once; the worker sets it from ``AGENT_CONNECT_CONCURRENCY`` (1..64)."""
        self._lock = threading.Lock()
        self._holders: dict[int, float] = {}  # token -> when its turn began
        self._tokens = itertools.count(1)

    def _expire(self, now: float) -> None:
        for token, since in list(self._holders.items()):
            if now - since >= self.max_hold_seconds:
                del self._holders[token]

    def try_enter(self) -> int | None:
        """A token if one of the ``width`` turns is free (or its holder overran it), else None."""
        with self._lock:
            now = self._clock()
            self._expire(now)
            if len(self._holders) >= self.width:
                return None
            token = next(self._tokens)
            self._holders[token] = now
            return token

    def leave(self, token: int) -> None:
        with self._lock:
            self._holders.pop(token, None)

    @contextlib.asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        """Wait for a turn on the current loop; cancelling the wait holds nothing."""
        token = self.try_enter()
        while token is None:
            await asyncio.sleep(self.poll_seconds)
            token = self.try_enter()
        try:
            yield
        finally:
            self.leave(token)


CONNECT_GATE = ConnectGate()
"""The process's gate (THREAD jobs share it; a PROCESS job is alone in its process)."""
