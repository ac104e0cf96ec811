"""The one deliberate piece of process-wide state: this process's AgentConfigService.

THREAD executor: the worker's main process owns one service, with the version
refresher, and every job (a thread with its own loop) uses it: that is what makes
the RAM tier hit. PROCESS executor: the main process's service answers
``on_request`` and keeps the shared Redis index current; each job process makes its
own without a refresher (it lives for one job) and closes it when the job ends,
which flushes its write-backs. It is created lazily, never at import: a service
built in the forkserver would hand every job a copy whose thread is dead.
"""

from __future__ import annotations

import asyncio
import atexit
import threading

from services import AgentConfigService

_lock = threading.Lock()
_service: AgentConfigService | None = None


def get_service(*, run_refresher: bool = True) -> AgentConfigService:
    """This process's service, created on first use."""
    global _service  # noqa: PLW0603 - the documented process-wide service
    with _lock:
        if _service is None:
            _service = AgentConfigService.from_env(run_refresher=run_refresher)
            atexit.register(_close_at_exit)
        return _service


def _close_at_exit() -> None:
    """Flush write-backs when the worker process ends normally."""
    asyncio.run(close_service())


async def close_service() -> None:
    """Close this process's service now (a PROCESS-mode job ending)."""
    global _service
    with _lock:
        service, _service = _service, None
    if service is not None:
        await service.aclose()
