"""One room connect at a time per THREAD-mode process, with a wait that can be cancelled.

``agent.worker`` serializes connects across job threads (each with its own event loop)
to dodge a race in livekit's rtc core. Waiting for a ``threading.Lock`` from a loop
takes a thread; a plain ``await asyncio.to_thread(lock.acquire)`` cannot be cancelled:
when a job gives up while waiting (its prompt failed: an unknown or deleted agent), the
thread still takes the lock later and nobody releases it. Every later connect of the
process then waits forever, and the job's own loop cannot close (its executor waits for
that thread). Here a cancelled waiter marks its ticket abandoned: the thread gives up
within ``POLL_SECONDS``, or hands back a lock it took after the waiter left.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator

POLL_SECONDS = 0.05


class _Ticket:
    def __init__(self) -> None:
        self.guard = threading.Lock()
        self.state = "waiting"  # waiting -> held | abandoned


class ConnectGate:
    def __init__(self) -> None:
        self._lock = threading.Lock()

    def _take(self, ticket: _Ticket) -> None:
        while not self._lock.acquire(timeout=POLL_SECONDS):
            with ticket.guard:
                if ticket.state == "abandoned":
                    return
        with ticket.guard:
            if ticket.state == "abandoned":
                self._lock.release()
                return
            ticket.state = "held"

    @contextlib.asynccontextmanager
    async def hold(self) -> AsyncIterator[None]:
        """Hold the gate for the body; cancelling the wait never leaks it."""
        ticket = _Ticket()
        try:
            await asyncio.to_thread(self._take, ticket)
        except BaseException:
            with ticket.guard:
                if ticket.state == "held":
                    self._lock.release()
                ticket.state = "abandoned"
            raise
        try:
            yield
        finally:
            self._lock.release()
