"""A stalled worker says where it is stuck: every thread's stack, on stderr.

Once, in a burst of 8 calls (before issue 18's work), a worker logged nothing more after a
job runner began initializing, and 19 of 24 calls got no agent. It never recurred, so its
cause was never seen. A process in that state cannot say anything itself: a stuck main
loop runs no log call, and a thread that holds the GIL stops every other. faulthandler's
watchdog is a C thread that needs neither. The worker's loop re-arms it every
``REARM_SECONDS``; if the loop does not come back within ``STALL_SECONDS``, the watchdog
writes every thread's Python stack to stderr (the worker's log stream), then again every
``STALL_SECONDS`` while the stall lasts. It does not kill the worker: a liveness probe on
its health port (``AGENT_HTTP_PORT``, answered on the same loop) does that.
"""

from __future__ import annotations

import asyncio
import faulthandler
import sys
from typing import TextIO

STALL_SECONDS = 15.0
"""Longer than anything the loop legitimately blocks for (the longest measured: a few
hundred ms during a burst), short enough that the stacks are taken while stuck."""
REARM_SECONDS = 1.0


class StallWatch:
    """Arms faulthandler's watchdog while the loop it runs on keeps running."""

    def __init__(self, stall_seconds: float = STALL_SECONDS, file: TextIO | None = None) -> None:
        if stall_seconds <= REARM_SECONDS:
            raise ValueError(f"stall_seconds must be more than {REARM_SECONDS}")
        self._stall_seconds = stall_seconds
        self._file = file if file is not None else sys.stderr
        self._handle: asyncio.TimerHandle | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._rearm(loop)

    def _rearm(self, loop: asyncio.AbstractEventLoop) -> None:
        faulthandler.dump_traceback_later(self._stall_seconds, repeat=True, file=self._file)
        self._handle = loop.call_later(REARM_SECONDS, self._rearm, loop)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
            faulthandler.cancel_dump_traceback_later()
