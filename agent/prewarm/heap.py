"""The process's start-up heap, frozen out of the cyclic garbage collector.

A full (generation 2) collection walks every object the process tracks, and holds the GIL
while it does: under THREAD every call's loop stops for it. The worker's start-up heap
(modules, the plugins, the local models' wrappers, the service) is about 245,000 objects
that live as long as the process, and a full collection of them took 82 ms on an idle
core and 205-228 ms during a burst of six call starts on one core (livekit's loop
monitor: "event loop blocked", ``gc_time``), in every job loop at once. Frozen
(``gc.freeze``), they are never walked again: a full collection then walks only what the
calls allocated. livekit-agents does the same in its PROCESS forkserver
(``livekit.agents.ipc._preload_freeze``), for copy-on-write's sake.
"""

from __future__ import annotations

import gc
import threading
import time

import structlog

log = structlog.get_logger(__name__)
_lock = threading.Lock()
_frozen = False


def freeze_startup_heap() -> None:
    """Collect once, then freeze what is left, once per process (later calls do nothing:
    objects allocated for calls must stay collectable)."""
    global _frozen  # noqa: PLW0603 - a process-wide fact, like the collector itself
    with _lock:
        if _frozen:
            return
        _frozen = True
        started = time.perf_counter()
        gc.collect()
        gc.freeze()
    log.info("startup_heap_frozen", objects=gc.get_freeze_count(),
             ms=round((time.perf_counter() - started) * 1000, 1))  # fmt: skip
