"""Gauges of what a long-running worker process holds, for operators and the soak
(``bench.capacity --soak``): a leak shows as a count that grows with calls served.

``agent_asyncio_tasks`` counts the tasks of every event loop this process runs calls on:
the worker's main loop and, under the THREAD executor, each job's loop (a job process of
the PROCESS executor is a process of its own and ends with its call). Process-level
figures (resident memory, open file descriptors) come from prometheus_client's process
collector; threads are read from ``/proc`` by whoever needs them.
"""

from __future__ import annotations

import asyncio
import threading
import weakref

from prometheus_client import Gauge

_loops: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()
_lock = threading.Lock()


def watch_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Count ``loop``'s tasks while it lives (a closed or collected loop drops out)."""
    with _lock:
        _loops.add(loop)


def asyncio_tasks() -> int:
    """Tasks not yet done on the watched loops. Read from the scrape thread: ``all_tasks``
    copies each loop's task set, retrying if it changes underneath."""
    with _lock:
        loops = [loop for loop in _loops if not loop.is_closed()]
    return sum(len(asyncio.all_tasks(loop)) for loop in loops)


ASYNCIO_TASKS = Gauge("agent_asyncio_tasks", "Unfinished asyncio tasks on this process's call loops")
ASYNCIO_TASKS.set_function(asyncio_tasks)
