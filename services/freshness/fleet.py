"""One change-feed poller per fleet, elected through Redis; every other host follows it.

Only with ``PROMPT_CACHE_REDIS_URL``. Each worker host's main-process service runs a
:class:`FleetCoordinator` next to its refresher:

- **Election.** Hosts compete for a lease (:class:`~services.freshness.lease.RedisLease`). The
  holder is the leader: it polls ``agents:changedSince``, records the versions in Redis
  with its heartbeat, stores its cursor in Redis and publishes every poll (rows and an
  empty batch alike) on a channel. A renewal that fails steps it down at once.
- **Followers** subscribe to the channel (on the service loop) and apply each batch
  through the refresher (:meth:`VersionRefresher.apply`): held agents load their new
  version before the index points at it, and the batch confirms every cached version
  as of the leader's poll. The batch is the leader's heartbeat.
- **Fallback.** A follower whose subscription is down, that just re-subscribed (it
  may have missed a batch), or that has seen no batch for ``STALE_AFTER_POLLS``
  intervals polls Convex itself (and records and vouches in Redis like a leader) until
  batches flow again: freshness never depends on the leader being alive.
- **Takeover.** A new leader resumes from the cursor the last one stored in Redis; its
  first poll re-reads from there, overlap window included.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import socket
import time
import uuid
from collections.abc import Callable
from typing import Any

import structlog
from redis.asyncio import Redis

from services.freshness.lease import RedisLease
from services.freshness.refresher import VersionRefresher
from services.redis_io import FAILURES
from services.stats import FleetRole, FleetStats
from services.store.protocol import AgentVersion
from services.tiers.redis import RedisTier

log = structlog.get_logger(__name__)


# A follower polls Convex itself after this many refresh intervals without a batch.
STALE_AFTER_POLLS = 3
# The lease lasts this many refresh intervals (at least MIN_LEASE_SECONDS) and is
# renewed three times per period, so a dead leader is replaced within 1 1/3 periods.
LEASE_POLLS = 3
MIN_LEASE_SECONDS = 1.0
# A stored cursor older than this is a previous fleet's: a new leader does not replay it.
MAX_REPLAY_MS = 3_600_000.0
CURSOR_TTL_SECONDS = 86_400
# Bounds what a malformed batch can cost a follower (and its log line).
MAX_BATCH_BYTES = 8_000_000


def default_host_id() -> str:
    """This process's name in the fleet: host name, pid and a random suffix."""
    return f"{socket.gethostname()[:64]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class FleetMessageError(ValueError):
    """A published batch this code cannot use; the follower skips it."""


def encode_batch(leader: str, rows: list[AgentVersion], cursor_ms: float, poll_seconds: float) -> str:
    return json.dumps(
        {
            "leader": leader,
            "cursorMs": cursor_ms,
            "pollSeconds": poll_seconds,
            "rows": [
                {"agentId": r.agent_id, "updatedAt": r.updated_at, **({"deleted": True} if r.deleted else {})}
                for r in rows
            ],
        }
    )


def decode_batch(raw: bytes | str) -> tuple[str, list[AgentVersion], float, float]:
    """(leader, rows, cursor ms, poll seconds) of a published batch."""
    if len(raw) > MAX_BATCH_BYTES:
        raise FleetMessageError("batch too large")
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise FleetMessageError("not JSON") from exc
    if not isinstance(data, dict) or not isinstance(data.get("rows"), list):
        raise FleetMessageError("not a batch")
    leader, cursor, poll = data.get("leader"), data.get("cursorMs"), data.get("pollSeconds")
    if not isinstance(leader, str) or not isinstance(cursor, (int, float)) or not isinstance(poll, (int, float)):
        raise FleetMessageError("bad header")
    if not _is_finite(cursor) or not _is_finite(poll):
        raise FleetMessageError("bad header")
    rows: list[AgentVersion] = []
    for row in data["rows"]:
        agent_id = row.get("agentId") if isinstance(row, dict) else None
        updated_at = row.get("updatedAt") if isinstance(row, dict) else None
        if not isinstance(agent_id, str) or not agent_id or not isinstance(updated_at, (int, float)):
            raise FleetMessageError("bad row")
        if not _is_finite(updated_at):
            raise FleetMessageError("bad row")
        rows.append(AgentVersion(agent_id, float(updated_at), deleted=row.get("deleted") is True))
    return leader, rows, float(cursor), max(float(poll), 0.0)


def _is_finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class FleetCoordinator:
    """Implements the refresher's :class:`~services.freshness.refresher.RefreshHooks`. Lives on the
    service loop; :meth:`start` after :meth:`attach`, :meth:`aclose` to leave the fleet."""

    def __init__(
        self,
        tier: RedisTier,
        *,
        interval_seconds: float,
        host: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._tier = tier
        self._host = host or default_host_id()
        self._interval = interval_seconds
        self._clock = clock
        ttl = max(LEASE_POLLS * interval_seconds, MIN_LEASE_SECONDS)
        self._lease = RedisLease(tier.connection.lease_scripts, tier.key("fleet:leader"), self._host, int(ttl * 1000))
        self._channel = tier.key("fleet:changes")
        self._cursor_key = tier.key("fleet:cursor")
        self._refresher: VersionRefresher | None = None
        self._leader = False
        self._subscribed = False
        self._catch_up = False
        self._polling = False
        self._watching = False  # our heartbeat's watch is unbroken: every row since was recorded
        self._last_batch = time.monotonic()
        self._tasks: list[asyncio.Task[None]] = []
        self._pubsub_client: Redis | None = None
        self.batches_applied = 0
        self.own_polls = 0
        self.subscriptions = 0  # times the channel was (re)subscribed

    # ------------------------------------------------------------------ lifecycle

    @property
    def host(self) -> str:
        return self._host

    @property
    def role(self) -> FleetRole:
        return "leader" if self._leader else "follower"

    @property
    def subscribed(self) -> bool:
        return self._subscribed

    def stats(self) -> FleetStats:
        return FleetStats(
            self._host, self.role, self._subscribed, self.subscriptions, self.own_polls, self.batches_applied
        )

    @property
    def lease_seconds(self) -> float:
        return self._lease.ttl_ms / 1000.0

    def attach(self, refresher: VersionRefresher) -> None:
        self._refresher = refresher

    async def start(self) -> None:
        """Try for the lease once now (the first host leads at once), then keep electing
        and listening in the background."""
        await self._elect_once()
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._elect_forever(), name="fleet-election"),
            loop.create_task(self._listen_forever(), name="fleet-subscription"),
        ]

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self._leader:
            self._leader = False
            await self._lease.release()
        await self._tier.end_watch(self._host)
        if self._pubsub_client is not None:
            with contextlib.suppress(*FAILURES):
                await self._pubsub_client.aclose()

    # ------------------------------------------------------------------ election

    async def _elect_forever(self) -> None:
        while True:
            await asyncio.sleep(self.lease_seconds / 3)
            try:
                await self._elect_once()
            except Exception:
                log.exception("fleet_election_crashed")

    async def _elect_once(self) -> None:
        if self._leader:
            if not await self._lease.renew():
                self._step_down("renewal_lost")
        elif await self._lease.acquire():
            await self._take_over()

    async def _take_over(self) -> None:
        assert self._refresher is not None
        own = self._refresher.cursor_ms
        stored = await self._stored_cursor()
        resumed = stored is not None and own - MAX_REPLAY_MS < stored < own
        if resumed and stored is not None:
            self._refresher.resume_from(stored)
        self._leader = True
        self._watching = False
        # Vouch at once: versions recorded from now on are covered by our next polls,
        # which re-read from the cursor (overlap included).
        self._watching = await self._tier.heartbeat(self._host, new_watch=True)
        log.info(
            "fleet_leader_elected",
            host=self._host,
            resumedFromStoredCursor=resumed,
            cursorMs=self._refresher.cursor_ms,
            leaseSeconds=self.lease_seconds,
        )

    def _step_down(self, reason: str) -> None:
        self._leader = False
        self._watching = False
        # Until another leader's batch arrives, poll ourselves.
        self._last_batch = -math.inf
        log.warning("fleet_leader_stepped_down", host=self._host, reason=reason)

    async def _stored_cursor(self) -> float | None:
        try:
            raw = await self._tier.connection.get(self._cursor_key)
        except FAILURES as exc:  # no stored cursor: our own is used
            log.warning("fleet_cursor_unreadable", error=type(exc).__name__)
            return None
        try:
            value = float(raw) if raw is not None else None
        except (TypeError, ValueError):
            return None
        return value if value is not None and math.isfinite(value) else None

    # ------------------------------------------------------------------ refresher hooks

    async def should_poll(self) -> bool:
        if self._leader:
            polling, reason = True, "leader"
        elif not self._subscribed:
            polling, reason = True, "subscription_down"
        elif self._catch_up:
            polling, reason = True, "resubscribed"
        elif time.monotonic() - self._last_batch > STALE_AFTER_POLLS * self._interval:
            polling, reason = True, "no_leader_batches"
        else:
            polling, reason = False, "following"
        if polling != self._polling:
            log.info("fleet_polling_changed", host=self._host, polling=polling, reason=reason)
            if not polling:
                # We stop recording: withdraw our heartbeat rather than let it vouch on.
                self._watching = False
                await self._tier.end_watch(self._host)
        self._polling = polling
        return polling

    async def after_poll(self, rows: list[AgentVersion], started: float, cursor_ms: float) -> None:
        if not self._leader:
            self.own_polls += 1
        self._catch_up = False
        # A delete is published (followers drop the agent) but never recorded as a version.
        recorded = await self._tier.record_versions([row for row in rows if not row.deleted])
        # After any gap (tier resting, a failed record, not polling) start a new watch:
        # never vouch for versions this host did not record.
        beat = recorded and await self._tier.heartbeat(self._host, new_watch=not self._watching)
        self._watching = beat
        if self._leader:
            await self._publish(rows, started, cursor_ms)

    async def _publish(self, rows: list[AgentVersion], started: float, cursor_ms: float) -> None:
        message = encode_batch(self._host, rows, cursor_ms, max(self._clock() - started, 0.0))
        try:
            await self._tier.connection.set_and_publish(
                self._cursor_key,
                repr(cursor_ms),
                ttl_seconds=CURSOR_TTL_SECONDS,
                channel=self._channel,
                message=message,
            )
        except FAILURES as exc:  # followers fall back to polling
            log.warning("fleet_publish_failed", error=type(exc).__name__, rows=len(rows))

    # ------------------------------------------------------------------ following

    async def _listen_forever(self) -> None:
        dropped = False
        while True:
            try:
                await self._listen(resubscribing=dropped)
            except asyncio.CancelledError:
                raise
            except FAILURES as exc:  # Redis or the network failing: poll until we are back
                if self._subscribed or not dropped:
                    log.warning("fleet_subscription_lost", host=self._host, error=type(exc).__name__)
            except Exception:  # a bug, not Redis: say so, and poll until the next subscription
                log.exception("fleet_listener_crashed", host=self._host)
            finally:
                self._subscribed = False
            dropped = True
            await asyncio.sleep(self._interval)

    async def _listen(self, *, resubscribing: bool) -> None:
        if self._pubsub_client is None:
            self._pubsub_client = self._tier.connection.subscriber()
        pubsub = self._pubsub_client.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(self._channel)
            # We may have missed batches while down: one poll of our own covers them.
            self._catch_up = resubscribing
            self._subscribed = True
            self.subscriptions += 1
            log.info("fleet_subscribed", host=self._host, catchUp=resubscribing)
            while True:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if message is not None and message.get("type") == "message":
                    await self._on_batch(message["data"])
        finally:
            with contextlib.suppress(*FAILURES):
                await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def _on_batch(self, raw: bytes | str) -> None:
        received = self._clock()
        try:
            leader, rows, cursor_ms, poll_seconds = decode_batch(raw)
        except FleetMessageError as exc:
            log.warning("fleet_batch_rejected", reason=str(exc), bytes=len(raw))
            return
        if leader == self._host or self._refresher is None:
            return
        self._last_batch = time.monotonic()
        # Complete as of the leader's poll start: our clock now, less the poll's duration.
        await self._refresher.apply(rows, received - poll_seconds)
        self._refresher.follow(cursor_ms)
        self.batches_applied += 1
