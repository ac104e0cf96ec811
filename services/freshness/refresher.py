"""Keeps the version index current by polling the store's change feed.

This is what takes Convex off the join path: a join learns an agent's current
version from the index (or the dispatch hint), not from a read. Each poll asks for
everything stamped since the newest stamp seen (or the last poll) minus the overlap
window that ``agents:changedSince`` documents; rows are applied forward-only, so the
overlap re-reads cost nothing but bandwidth. The cursor starts at "now": a new worker
never scans the whole agents table.

With Redis, ``hooks`` (services/freshness/fleet.py) decide whether this host polls at all (only
the fleet's leader, or a follower that hears no leader), and record, vouch for and
publish each poll; followers feed published batches through :meth:`apply`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

import structlog

from services import metrics
from services.errors import StoreAuthError, StoreError
from services.freshness.version_index import VersionIndex
from services.store.protocol import CHANGED_SINCE_OVERLAP_MS, AgentStore, AgentVersion, rows_answered

log = structlog.get_logger(__name__)

PAGE_SIZE = 1000
MAX_PAGES_PER_POLL = 50
# Rows stamped further ahead of this worker's clock do not move the cursor.
FUTURE_STAMP_BOUND_MS = 60_000.0
# How many agents the refresher reloads at once after one poll (a migration touches all).
MAX_CONCURRENT_RELOADS = 8


class RefreshHooks(Protocol):
    """What a fleet (services/freshness/fleet.py) adds to the refresher: whether this host polls
    at all, and what happens with a poll's rows beyond this process."""

    async def should_poll(self) -> bool:
        """False while another host's published polls keep this one current."""
        ...

    async def after_poll(self, rows: list[AgentVersion], started: float, cursor_ms: float) -> None:
        """A poll that started at ``started`` (this host's clock) succeeded with ``rows``."""
        ...


class VersionRefresher:
    def __init__(
        self,
        store: AgentStore,
        index: VersionIndex,
        *,
        interval_seconds: float,
        on_new_version: Callable[[AgentVersion, float], Awaitable[None]],
        hooks: RefreshHooks | None = None,
        on_confirmed: Callable[[float], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._index = index
        self._interval = interval_seconds
        self._on_new_version = on_new_version
        self._hooks = hooks
        self._on_confirmed = on_confirmed  # told when rows known complete as of a time are applied
        self._clock = clock
        self._started_at = clock()
        self._cursor_ms = self._started_at * 1000.0
        self._task: asyncio.Task[None] | None = None
        self._warned_ahead: frozenset[tuple[str, float]] = frozenset()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="version-refresher")

    @property
    def cursor_ms(self) -> float:
        """Where the next poll reads from (before the overlap window)."""
        return self._cursor_ms

    def resume_from(self, cursor_ms: float) -> None:
        """Continue from another poller's cursor (a fleet takeover): the next poll
        re-reads from there, overlap window included, so nothing in between is missed."""
        self._cursor_ms = cursor_ms

    def follow(self, cursor_ms: float) -> None:
        """Another host polled up to ``cursor_ms`` and published what it saw. A cursor
        beyond our own clock plus the overlap window is not believed past that point."""
        ceiling = self._clock() * 1000.0 + CHANGED_SINCE_OVERLAP_MS
        self._cursor_ms = max(self._cursor_ms, min(cursor_ms, ceiling))

    async def _run(self) -> None:
        while True:
            # Sleep first: the cursor starts at "now", so an immediate poll has nothing to find.
            await asyncio.sleep(self._interval)
            try:
                if self._hooks is not None and not await self._hooks.should_poll():
                    continue
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
        fresh = await self.apply(rows, started)
        self._advance_cursor(rows, started, truncated)
        if self._hooks is not None:
            await self._hooks.after_poll(rows, started, self._cursor_ms)
        metrics.REFRESH_POLLS.labels(result="ok").inc()
        return fresh

    async def apply(self, rows: list[AgentVersion], at: float) -> list[AgentVersion]:
        """Apply change-feed rows known complete as of ``at`` (this host's clock): load
        the new versions of held agents, then confirm every indexed version."""
        fresh = [row for row in rows if (self._index.newest_stamp(row.agent_id) or float("-inf")) < row.updated_at]
        if fresh:
            reloads = asyncio.Semaphore(MAX_CONCURRENT_RELOADS)

            async def apply_one(row: AgentVersion) -> None:
                async with reloads:
                    await self._on_new_version(row, at)

            await asyncio.gather(*(apply_one(row) for row in fresh))
        self._index.confirm_all(at)
        if self._on_confirmed is not None:
            self._on_confirmed(at)
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
