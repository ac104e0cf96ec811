"""How full this worker is: the ``load`` it reports to livekit-server.

livekit-agents' default reports a 2.5 s moving average of host CPU, so a burst of job
start-ups (process spawn, room connect, session start) reads as "full" and livekit-server
drops the dispatches it cannot place. Here the load answers "can this worker take another
call":

    load = target_load * min(jobs, max_jobs) / max_jobs      (or target_load if CPU is saturated)

- ``jobs`` are the jobs livekit-agents runs (``AgentServer.active_jobs``); jobs accepted but
  not yet launched are added by livekit-agents itself (its "reserved slots", each costing
  ``load / jobs``, or ``load_threshold / num_idle_processes`` while nothing runs, which is why
  the worker passes ``num_idle_processes=max_jobs``).
- ``target_load`` is livekit-server's ``agents.target_load`` (0.7 by default): the server
  offers a job only to a worker whose load is below it, and the worker passes the same
  value as ``load_threshold``. The worker is thus full exactly when ``max_jobs`` jobs run.
- CPU counts only when it is saturated for a sustained window (``CpuSaturation``): then the
  worker takes no new job, whatever its free slots. A start-up spike never lasts that long.

The policy and the CPU window are pure (no clock read, no I/O); ``CpuSampler`` is the one
thread that feeds host CPU samples into the window.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from livekit.agents import AgentServer

CALLS_PER_CPU: dict[str, int] = {"thread": 6, "process": 4}
"""Default slots per CPU, by executor: the talking calls one worker core carried with no
call lost, turn p95 within the 1-call p95 + 200 ms and no audio gap over 200 ms
(``python -m bench.capacity --worker-cpus 0``; the figures and their commands are in
docs/capacity.md)."""
THREAD_CALLS_PER_PROCESS = 6
"""THREAD runs every call in one interpreter, whose Python work takes turns on one GIL
whatever the cores: past the calls measured in one process (on one core) more CPUs are
not shown to carry more. For more calls per host, run one worker per core or PROCESS."""

CGROUP_ROOT = Path("/sys/fs/cgroup")


def cgroup_cpu_limit(root: Path = CGROUP_ROOT) -> float | None:
    """The CPUs a cgroup CPU quota allows this process (v2 ``cpu.max``, v1
    ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``); ``None`` when there is no quota. A pod
    limited to 2 CPUs on a 64-core node sees 64 in ``os.cpu_count()``: slots sized from
    that would crowd its 2 CPUs with 32 times the calls they carry."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return None if quota_us <= 0 or period_us <= 0 else quota_us / period_us


def available_cpus(root: Path = CGROUP_ROOT) -> float:
    """The CPUs this process may use: its affinity (``taskset``, a cpuset), capped by a
    cgroup quota."""
    cpus = float(len(os.sched_getaffinity(0)))
    limit = cgroup_cpu_limit(root)
    return min(cpus, limit) if limit else cpus


def default_max_jobs(executor: str = "thread", cpu_count: float | None = None) -> int:
    """``AGENT_MAX_JOBS`` when unset: ``CALLS_PER_CPU`` per available CPU (THREAD: at most
    ``THREAD_CALLS_PER_PROCESS``), at least 1."""
    cpus = cpu_count if cpu_count is not None else available_cpus()
    slots = int(cpus * CALLS_PER_CPU[executor])
    if executor == "thread":
        slots = min(slots, THREAD_CALLS_PER_PROCESS)
    return max(1, slots)


class CpuSaturation:
    """Mean CPU over the last ``window_seconds``; saturated when the window is covered and
    its mean is at or above ``level``. Samples carry their own timestamps (no clock read)."""

    def __init__(self, window_seconds: float, level: float) -> None:
        if window_seconds <= 0:
            raise ValueError("window_seconds must be positive")
        self.window_seconds = window_seconds
        self.level = level
        self._samples: deque[tuple[float, float]] = deque()
        self._lock = threading.Lock()

    def add(self, at: float, cpu: float) -> None:
        """One sample: ``cpu`` in 0..1 (share of the host's CPUs) observed at time ``at``."""
        with self._lock:
            self._samples.append((at, cpu))
            while self._samples and self._samples[0][0] < at - self.window_seconds:
                self._samples.popleft()

    def saturated(self) -> bool:
        with self._lock:
            if len(self._samples) < 2 or self.level > 1:
                return False
            covered = self._samples[-1][0] - self._samples[0][0]
            if covered < self.window_seconds * 0.9:
                return False  # not enough history: a start-up spike, not saturation
            mean = sum(cpu for _, cpu in self._samples) / len(self._samples)
            return mean >= self.level


@dataclass(frozen=True)
class CapacityPolicy:
    max_jobs: int
    """Jobs this worker runs at once (``AGENT_MAX_JOBS``)."""
    target_load: float
    """livekit-server's ``agents.target_load``; also this worker's ``load_threshold``."""

    def __post_init__(self) -> None:
        if self.max_jobs < 1:
            raise ValueError("max_jobs must be at least 1")
        if not 0 < self.target_load <= 1:
            raise ValueError("target_load must be in (0, 1]")

    def load(self, jobs: int, *, cpu_saturated: bool = False) -> float:
        """The load to report with ``jobs`` jobs running."""
        if cpu_saturated:
            return self.target_load
        return self.target_load * min(max(jobs, 0), self.max_jobs) / self.max_jobs


class CpuSampler:
    """A daemon thread adding one host CPU sample a second to a ``CpuSaturation``."""

    def __init__(self, window: CpuSaturation, read_cpu: Callable[[float], float] | None = None) -> None:
        if read_cpu is None:
            from livekit.agents.utils.hw import get_cpu_monitor

            monitor = get_cpu_monitor()
            read_cpu = monitor.cpu_percent
        self._window, self._read_cpu = window, read_cpu
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="capacity-cpu-sampler", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            cpu = self._read_cpu(1.0)  # blocks one second
            self._window.add(time.monotonic(), cpu)


STATUS_INTERVAL_SECONDS = 0.5
"""How often the worker tells livekit-server its status. livekit-agents does it every 2.5 s
(``UPDATE_STATUS_INTERVAL``), and the server places jobs by the last status it got: a
worker that was full keeps getting none for up to 2.5 s after its slots freed, while the
dispatches of waiting callers are dropped. Measured with 16 calls at a time on 8 PROCESS
slots (``bench.loadtest --mode livekit``): 3.85 jobs/s at 2.5 s, 4.27 jobs/s at 0.5 s."""


def report_status_every(seconds: float) -> None:
    """Make livekit-agents send its worker status every ``seconds`` (one small message on
    the worker's websocket). It reads the interval when its connection starts, so this
    is called before the server runs. livekit-agents has no option for it: this sets its
    module constant, which the pinned version (1.8.9) has; a test fails if it goes away."""
    if seconds <= 0:
        raise ValueError("seconds must be positive")
    from livekit.agents import worker as livekit_worker

    if not hasattr(livekit_worker, "UPDATE_STATUS_INTERVAL"):
        raise RuntimeError("livekit-agents no longer has UPDATE_STATUS_INTERVAL: see agent.admission.capacity")
    livekit_worker.UPDATE_STATUS_INTERVAL = seconds


def load_function(policy: CapacityPolicy, cpu: CpuSaturation | None) -> Callable[[AgentServer], float]:
    """The ``load_fnc`` for ``AgentServer``: this worker's running jobs against its slots."""

    def load(server: AgentServer) -> float:
        return policy.load(len(server.active_jobs), cpu_saturated=cpu is not None and cpu.saturated())

    return load
