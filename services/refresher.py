"""Keeps the version index current by polling the store's change feed.

This is what takes Convex off the join path: a join learns an agent's current
version from the index (or the dispatch hint), not from a read. Each poll asks for
everything stamped since the newest stamp seen (or the last poll) minus the overlap
window that ``agents:changedSince`` documents; rows are applied forward-only, so the
overlap re-reads cost nothing but bandwidth. The cursor starts at "now": a new worker
never scans the whole agents table.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import structlog

from services import metrics
from services.errors import StoreError
from services.redis_tier import RedisTier
from services.store import CHANGED_SINCE_OVERLAP_MS, AgentStore, AgentVersion
from services.version_index import VersionIndex

log = structlog.get_logger(__name__)

PAGE_SIZE = 1000
MAX_PAGES_PER_POLL = 50


class VersionRefresher:
    def __init__(
        self,
        store: AgentStore,
        index: VersionIndex,
        *,
        interval_seconds: float,
        on_new_version: Callable[[AgentVersion, float], Awaitable[None]],
        redis: RedisTier | None = None,
        on_confirmed: Callable[[float], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._index = index
        self._interval = interval_seconds
        self._on_new_version = on_new_version
        self._redis = redis
        self._on_confirmed = on_confirmed  # told when a poll that started then succeeded
        self._clock = clock
        self._started_at = clock()
        self._cursor_ms = self._started_at * 1000.0
        self._task: asyncio.Task[None] | None = None
        self.polls_ok = 0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="version-refresher")

    async def _run(self) -> None:
        if self._redis is not None:
            # The watch starts now; vouching for it at once lets PROCESS-mode jobs trust
            # versions recorded from here on without waiting for the first poll.
            await self._redis.heartbeat(self._started_at)
        while True:
            # Sleep first: the cursor starts at "now", so an immediate poll has nothing to find.
            await asyncio.sleep(self._interval)
            try:
                await self.poll_once()
            except StoreError as exc:
                metrics.REFRESH_POLLS.labels(result="error").inc()
                log.warning("version_refresh_failed", error=str(exc))
            except Exception:
                metrics.REFRESH_POLLS.labels(result="error").inc()
                log.exception("version_refresh_crashed")

    async def poll_once(self) -> list[AgentVersion]:
        """One poll; raises ``StoreError`` and leaves the cursor where it was on failure."""
        started = self._clock()
        since = self._cursor_ms - CHANGED_SINCE_OVERLAP_MS
        rows = await self._store.changed_since(since, PAGE_SIZE)
        pages = 1
        while len(rows) >= PAGE_SIZE * pages and pages < MAX_PAGES_PER_POLL:
            last = rows[-1].updated_at
            more = [row for row in await self._store.changed_since(last, PAGE_SIZE) if row not in rows]
            if not more:
                break
            rows.extend(more)
            pages += 1
        fresh = [row for row in rows if (self._index.get(row.agent_id) or float("-inf")) < row.updated_at]
        if fresh:
            await asyncio.gather(*(self._on_new_version(row, started) for row in fresh))
        self._index.confirm_all(started)
        if self._on_confirmed is not None:
            self._on_confirmed(started)
        newest = max((row.updated_at for row in rows), default=float("-inf"))
        self._cursor_ms = max(self._cursor_ms, newest, started * 1000.0)
        if self._redis is not None:
            if rows:
                await self._redis.record_versions(rows)
            await self._redis.heartbeat(self._started_at)
        self.polls_ok += 1
        metrics.REFRESH_POLLS.labels(result="ok").inc()
        if fresh:
            log.info("agent_versions_changed", count=len(fresh), agentIds=[row.agent_id for row in fresh[:20]])
        return fresh

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
