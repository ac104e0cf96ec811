"""Calls that have ended while their job still tears down: their slots are free.

A caller who hangs up ends the call at once, but its job lives on for a while: the session
waits for a last transcript (0.5 s), then the job leaves the room and runs its shutdown
callbacks. livekit-agents counts the job in ``active_jobs`` until its executor is gone, and
livekit-server learns of the free slot at the worker's next status report after that. A
caller who dials in that window finds the worker full: livekit-server drops the dispatch
and ``dispatch_agent`` re-creates it 1.5 s later. Measured with six callers who redial as
soon as they hang up, on six slots: 1.42 dispatches per call and a first-audio p95 of
2.9 s (``docs/voice.md``).

So a job whose caller has left holds no slot (``agent.server.WorkerServer.active_jobs``),
and the worker reports it to livekit-server at once. Only a THREAD job can tell the worker
this way, since its session runs in the worker's process; a PROCESS job's slot is
reported free when its process ends.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

from livekit.agents.job import RunningJobInfo

__all__ = ["ENDED_CALLS", "EndedCalls"]


class EndedCalls:
    """Job ids whose call has ended. Marked from a job's thread; read by the worker's
    loop and by livekit-agents' load thread: every access holds the lock."""

    def __init__(self) -> None:
        self._jobs: set[str] = set()
        self._lock = threading.Lock()
        self._listener: Callable[[], None] | None = None

    def on_mark(self, listener: Callable[[], None] | None) -> None:
        """Call ``listener`` (from the marking thread) each time a call is newly marked ended."""
        with self._lock:
            self._listener = listener

    def mark(self, job_id: str) -> bool:
        """The call of job ``job_id`` has ended: its slot is free from now on. False when
        it was already marked."""
        with self._lock:
            if job_id in self._jobs:
                return False
            self._jobs.add(job_id)
            listener = self._listener
        if listener is not None:
            listener()
        return True

    def live(self, jobs: Sequence[RunningJobInfo]) -> list[RunningJobInfo]:
        """``jobs`` without those whose call has ended. Forgets ended jobs no longer among
        ``jobs`` (they are gone), so the set holds only jobs still tearing down."""
        ids = {info.job.id for info in jobs}
        with self._lock:
            self._jobs &= ids
            return [info for info in jobs if info.job.id not in self._jobs]


ENDED_CALLS = EndedCalls()
"""This process's: THREAD jobs mark it, the worker's ``active_jobs`` reads it."""
