"""The one deliberate piece of process-wide state: this process's AgentConfigService.

THREAD executor: the worker's main process owns one service, with the version
refresher, and every job (a thread with its own loop) uses it: that is what makes
the RAM tier hit. PROCESS executor: the main process's service answers
``on_request``, keeps the version index current and owns the host tier (LMDB, see
``services/tiers/host_owner.py``) in the directory :func:`prepare_host_tier` exported before
the process pool started; each job process makes its own service without a
refresher, reading the host tier (opened in prewarm), and closes it when the job
ends, which flushes its write-backs. It is created lazily, never at import: a service
built in the forkserver would hand every job a copy whose thread is dead.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import shutil
import threading
from pathlib import Path

import structlog

from services import AgentConfigService, ServiceSettings
from services.tiers.host_format import HostTierError, default_directory
from services.tiers.host_owner import HostTierOwner
from services.tiers.host_reader import HostTier, HostTierReader

log = structlog.get_logger(__name__)

HOST_CACHE_DIR_ENV = "PROMPT_HOST_CACHE_DIR"  # ServiceSettings.host_cache_dir; exported to job processes

_lock = threading.Lock()
_service: AgentConfigService | None = None
_host_dir: Path | None = None  # set in the main process of a PROCESS-executor worker
_host_dir_created = False  # by prepare_host_tier(), so removed by this process at exit


def get_service(*, run_refresher: bool = True) -> AgentConfigService:
    """This process's service, created on first use. With a refresher in a worker whose
    host tier was prepared, it owns that tier; without one (a PROCESS-mode job process)
    it reads the tier its worker's main process writes."""
    global _service  # noqa: PLW0603 - the documented process-wide service
    with _lock:
        if _service is None:
            host = _claim_host_tier() if run_refresher else _open_reader()
            _service = AgentConfigService.from_env(run_refresher=run_refresher, host=host)
            atexit.register(_close_at_exit)
        return _service


def prepare_host_tier() -> Path:
    """Main process, PROCESS executor, before the process pool starts: choose the host
    tier's directory and export it, so the forkserver and every job process inherit it.
    A directory created here (``PROMPT_HOST_CACHE_DIR`` unset) is removed at exit. The
    main service creates the tier itself on first use."""
    global _host_dir, _host_dir_created  # noqa: PLW0603 - decided once per worker
    with _lock:
        if _host_dir is None:
            configured = ServiceSettings.from_env().host_cache_dir
            _host_dir = configured or default_directory()
            _host_dir_created = configured is None
            os.environ[HOST_CACHE_DIR_ENV] = str(_host_dir)
            atexit.register(remove_host_directory)
        return _host_dir


def remove_host_directory() -> None:
    """Remove the host tier's directory if this process created it (at exit; call it
    before ``os._exit``, which skips exit handlers)."""
    if _host_dir is not None and _host_dir_created:
        shutil.rmtree(_host_dir, ignore_errors=True)


def _claim_host_tier() -> HostTier | None:
    if _host_dir is None:
        return None
    settings = ServiceSettings.from_env()
    try:
        owner = HostTierOwner.open(_host_dir, max_entries=settings.max_entries)
    except HostTierError as exc:
        log.error("host_tier_unavailable", role="owner", reason=str(exc))
        return None
    log.info("host_tier_ready", directory=str(_host_dir))
    return owner


def _open_reader() -> HostTier | None:
    directory = ServiceSettings.from_env().host_cache_dir  # exported by the main process
    if directory is None:
        return None
    try:
        return HostTierReader.open(directory)
    except HostTierError as exc:
        log.warning("host_tier_unavailable", role="reader", reason=str(exc))
        return None


def _close_at_exit() -> None:
    """Flush write-backs when the worker process ends normally."""
    asyncio.run(close_service())


async def close_service() -> None:
    """Close this process's service now (a PROCESS-mode job ending), and its host tier."""
    global _service
    with _lock:
        service, _service = _service, None
    if service is not None:
        await service.aclose()
        if service.host_tier is not None:
            service.host_tier.close()
