"""How late a job's event loop runs its callbacks: the one figure that says whether a
call's audio, VAD and turn handling were kept waiting by something else on its loop.

A sleeper task on the job's loop asks to wake every ``INTERVAL_SECONDS`` and records by
how much it overslept. Under the THREAD executor every call's loop shares one process
(livekit's FFI wakes every loop for every call's events, see
``../shared/notes/voice-pipeline-facts.md``), so this is where crowding shows first. The
job logs the figures in ``job_ended`` (``loopLagP99Ms``, ``loopLagMaxMs``,
``loopLagSamples``); ``bench.capacity`` reads them per step.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time

INTERVAL_SECONDS = 0.05
MAX_SAMPLES = 72_000
"""An hour of samples at the interval (about 0.6 MB of floats); later ones replace the
oldest, so a long call's memory stays bounded."""


class LoopLag:
    """Samples the running loop's lag until ``stop``; ``figures`` summarizes them."""

    def __init__(self) -> None:
        self._samples: list[float] = []
        self._next = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._sample(), name="loop_lag")

    async def stop(self) -> dict[str, float | int | None]:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        return self.figures()

    def figures(self) -> dict[str, float | int | None]:
        ordered = sorted(self._samples)
        if not ordered:
            return {"loopLagP99Ms": None, "loopLagMaxMs": None, "loopLagSamples": 0}
        p99 = ordered[min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)]
        return {
            "loopLagP99Ms": round(p99 * 1000, 1),
            "loopLagMaxMs": round(ordered[-1] * 1000, 1),
            "loopLagSamples": len(ordered),
        }

    def _record(self, lag: float) -> None:
        if len(self._samples) < MAX_SAMPLES:
            self._samples.append(lag)
        else:
            self._samples[self._next] = lag
            self._next = (self._next + 1) % MAX_SAMPLES

    async def _sample(self) -> None:
        while True:
            asked = time.perf_counter()
            await asyncio.sleep(INTERVAL_SECONDS)
            self._record(max(0.0, time.perf_counter() - asked - INTERVAL_SECONDS))
