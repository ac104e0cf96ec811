"""What the worker's and the callers' processes hold and use, read from ``/proc``."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


def process_tree(root: int) -> list[int]:
    """``root`` and its descendants (from ``/proc/*/stat``)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU of ``pids``, and of their children already waited for."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += sum(int(v) for v in fields[11:15])  # utime stime cutime cstime
    return total / CLK_TCK


def memory_kb(pids: list[int], key: str) -> int:
    """A ``smaps_rollup`` figure (``Pss:``, ``Rss:``) summed over ``pids``."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith(key):
                    total += int(line.split()[1])
    return total


def open_fds(pids: list[int]) -> int:
    return sum(len(os.listdir(f"/proc/{pid}/fd")) for pid in pids if Path(f"/proc/{pid}/fd").exists())


def threads(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, ValueError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("Threads:"):
                    total += int(line.split()[1])
    return total


class TreeSampler:
    """CPU and PSS of the worker's and the callers' process trees, once a second."""

    def __init__(self, worker_pid: int, caller_pids: list[int]) -> None:
        self.worker_pid, self.caller_pids = worker_pid, caller_pids
        self.samples: list[tuple[float, float, float, float]] = []
        """(monotonic, worker CPU s, callers CPU s, worker PSS MB)"""
        self._task: asyncio.Task[None] | None = None

    def sample(self) -> tuple[float, float, float, float]:
        tree = process_tree(self.worker_pid)
        callers = [pid for root in self.caller_pids for pid in process_tree(root)]
        return (time.monotonic(), cpu_seconds(tree), cpu_seconds(callers), memory_kb(tree, "Pss:") / 1024)

    async def run(self) -> None:
        while True:
            self.samples.append(await asyncio.to_thread(self.sample))
            await asyncio.sleep(1.0)

    def start(self) -> None:
        self._task = asyncio.ensure_future(self.run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def window(self, start: float, end: float) -> tuple[float, float, float, float] | None:
        """(seconds, worker CPU s, callers CPU s, max PSS MB) between the samples nearest
        inside [start, end]."""
        inside = [s for s in self.samples if start <= s[0] <= end]
        if len(inside) < 2:
            return None
        first, last = inside[0], inside[-1]
        return (last[0] - first[0], last[1] - first[1], last[2] - first[2], max(s[3] for s in inside))
