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
from services.errors import StoreAuthError, StoreError
from services.redis_tier import RedisTier
from services.store import CHANGED_SINCE_OVERLAP_MS, AgentStore, AgentVersion, rows_answered
from services.version_index import VersionIndex

log = structlog.get_logger(__name__)

PAGE_SIZE = 1000
MAX_PAGES_PER_POLL = 50
# Rows stamped further ahead of this worker's clock do not move the cursor.
FUTURE_STAMP_BOUND_MS = 60_000.0
# How many agents the refresher reloads at once after one poll (a migration touches all).
MAX_CONCURRENT_RELOADS = 8


class VersionRefresher:
    def __init__(
        self,
        store: AgentStore,
        index: VersionIndex,
        *,
        interval_seconds: float,
        on_new_version: Callable[[AgentVersion, float], Awaitable[None]],
        redis: RedisTier | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._index = index
        self._interval = interval_seconds
        self._on_new_version = on_new_version
        self._redis = redis
        self._clock = clock
        self._started_at = clock()
        self._cursor_ms = self._started_at * 1000.0
        self._task: asyncio.Task[None] | None = None
        self._warned_ahead: frozenset[tuple[str, float]] = frozenset()
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
            except StoreAuthError as exc:
                metrics.REFRESH_POLLS.labels(result="unauthorized").inc()
                log.error("version_refresh_unauthorized", error=str(exc))
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
        page = await self._store.changed_since(since, PAGE_SIZE)
        rows = list(page)
        seen = set(rows)  # dedupe in linear time: pages overlap at their boundary stamp
        pages = 1
        truncated = rows_answered(page) >= PAGE_SIZE
        while truncated and pages < MAX_PAGES_PER_POLL:
            page = await self._store.changed_since(rows[-1].updated_at, PAGE_SIZE)
            more = [row for row in page if row not in seen]
            truncated = rows_answered(page) >= PAGE_SIZE
            if not more:
                break
            seen.update(more)
            rows.extend(more)
            pages += 1
        fresh = [row for row in rows if (self._index.newest_stamp(row.agent_id) or float("-inf")) < row.updated_at]
        if fresh:
            reloads = asyncio.Semaphore(MAX_CONCURRENT_RELOADS)

            async def apply(row: AgentVersion) -> None:
                async with reloads:
                    await self._on_new_version(row, started)

            await asyncio.gather(*(apply(row) for row in fresh))
        self._index.confirm_all(started)
        self._advance_cursor(rows, started, truncated)
        if self._redis is not None:
            live = [row for row in rows if not row.deleted]
            if live:
                await self._redis.record_versions(live)
            await self._redis.heartbeat(self._started_at)
        self.polls_ok += 1
        metrics.REFRESH_POLLS.labels(result="ok").inc()
        if fresh:
            log.info("agent_versions_changed", count=len(fresh), agentIds=[row.agent_id for row in fresh[:20]])
        return fresh

    def _advance_cursor(self, rows: list[AgentVersion], started: float, truncated: bool) -> None:
        """Move the cursor to the newest stamp read, never past ``now + FUTURE_STAMP_BOUND_MS``.

        A row stamped further ahead (an import, a ms/us mix-up, a writer's clock far ahead)
        is applied like any other, but must not carry the cursor with it: every later real
        edit would fall behind ``since`` and never be seen. It is re-read each poll instead
        (it stays at the end of the feed), at the cost of one row of bandwidth.
        """
        now_ms = started * 1000.0
        limit = now_ms + FUTURE_STAMP_BOUND_MS
        believable = [row.updated_at for row in rows if row.updated_at <= limit]
        ahead = frozenset((row.agent_id, row.updated_at) for row in rows if row.updated_at > limit)
        if ahead and ahead != self._warned_ahead:  # once per set, not on every poll that re-reads them
            log.warning("change_feed_rows_from_the_future", count=len(ahead), boundMs=FUTURE_STAMP_BOUND_MS)
        self._warned_ahead = ahead
        newest = max(believable, default=float("-inf"))
        # If the feed was cut short, rows between the last one read and now are unread:
        # stop at the last one; otherwise everything up to now has been seen.
        self._cursor_ms = max(self._cursor_ms, newest, float("-inf") if truncated else now_ms)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
