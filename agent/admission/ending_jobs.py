"""Jobs whose call is over but whose teardown is not: they hold no call, so they hold no slot.

A caller hangs up; the session closes; the job then shuts down (its shutdown callbacks,
the room's disconnect, the executor's exit) and only then leaves livekit-agents'
``active_jobs``. Counted as running all that while, a full worker reports itself full
to the next caller, whose dispatch livekit-server drops; ``dispatch_agent`` re-creates it
1.5 s later (``agent.dispatch.NOT_TAKEN_AFTER_SECONDS``). The load function subtracts
the jobs marked here, for at most ``GRACE_SECONDS`` each (a teardown that hangs counts
again). Marks come from the job's own code, so they reach the load function under the
THREAD executor (one process); a PROCESS job marks in its own process, where the worker's
load function never looks, and counts until it exits.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable

GRACE_SECONDS = 5.0

_marked: dict[str, float] = {}
_lock = threading.Lock()


def mark_ending(job_id: str, now: float | None = None) -> None:
    """The call of ``job_id`` is over (its session closed, or its shutdown began)."""
    with _lock:
        _marked.setdefault(job_id, time.monotonic() if now is None else now)


def ending(job_ids: Iterable[str], now: float | None = None) -> int:
    """How many of the running ``job_ids`` are ending, within their grace. Forgets marks
    of jobs no longer running (the registry stays as small as the running jobs)."""
    at = time.monotonic() if now is None else now
    running = set(job_ids)
    with _lock:
        for gone in [job for job in _marked if job not in running]:
            del _marked[gone]
        return sum(1 for job, since in _marked.items() if at - since <= GRACE_SECONDS)
