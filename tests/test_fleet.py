"""A fleet of worker hosts shares one change-feed poller, elected through Redis (issue 13).

Real redis-server, the local Convex backend, real host processes where one must die."""

from __future__ import annotations

import queue
import time
from collections.abc import Callable, Iterator

import pytest
import redis as redis_sync

from bench.fleet import Event, HostProcess, host_env, wait_for
from devtools.processes import LocalConvex, RedisServer
from services import AgentConfigService
from services.freshness.fleet import FleetMessageError, decode_batch, encode_batch
from services.stats import FleetStats
from services.store.file import local_backend_id
from services.store.protocol import AgentVersion
from tests.helpers import convex_service, wait_for_async

PRIYA = local_backend_id(0)
MARCO = local_backend_id(1)
LEASE_KEY = "voiceagent:fleet:leader"
REFRESH = 0.2


WAIT_SECONDS = 30.0  # how long a test waits for an event before failing (not a figure)


async def until(condition: Callable[[], bool], what: str) -> None:
    """Wait for ``condition`` to hold (checked every 20 ms); fail naming ``what``."""

    async def holds() -> bool:
        return condition()

    await wait_for_async(holds, WAIT_SECONDS, what=what, interval=0.02)


def host(convex: LocalConvex, redis_url: str) -> AgentConfigService:
    return convex_service(convex, run_refresher=True, PROMPT_CACHE_REDIS_URL=redis_url, PROMPT_REFRESH_SECONDS=REFRESH)


def fleet_of(service: AgentConfigService) -> FleetStats:
    stats = service.stats().fleet
    assert stats is not None
    return stats


def role_of(service: AgentConfigService) -> str | None:
    stats = service.stats().fleet
    return None if stats is None else stats.role


def edit(convex: LocalConvex, agent_id: str, text: str) -> None:
    convex.call("mutation", "agents:update", {"agentId": agent_id, "systemPrompt": text})


async def serves(service: AgentConfigService, agent_id: str, text: str) -> bool:
    return text in (await service.get_full_prompt(agent_id)).prompt


async def until_served(services: list[AgentConfigService], agent_id: str, text: str) -> None:
    async def served_everywhere() -> bool:
        return all([await serves(s, agent_id, text) for s in services])

    if not await wait_for_async(served_everywhere, WAIT_SECONDS, interval=0.02):
        missing = [i for i, s in enumerate(services) if not await serves(s, agent_id, text)]
        pytest.fail(f"edit {text!r} never reached hosts {missing}")


@pytest.fixture
def raw(redis_url: str) -> Iterator[redis_sync.Redis]:
    client = redis_sync.Redis.from_url(redis_url)
    yield client
    client.close()


async def test_one_host_leads_and_a_lost_renewal_steps_it_down_at_once(
    convex: LocalConvex, redis_url: str, raw: redis_sync.Redis
) -> None:
    first, second = host(convex, redis_url), host(convex, redis_url)
    try:
        assert (role_of(first), role_of(second)) == ("leader", "follower")
        assert raw.get(LEASE_KEY) == fleet_of(first).host.encode()
        # Someone else now holds the lease: the leader's next renewal fails.
        raw.set(LEASE_KEY, "intruder", px=60_000)
        await until(lambda: role_of(first) == "follower", "the leader to step down")
        # Nobody claims a lease someone else holds.
        await until(lambda: role_of(second) == "follower", "no host leading")
        raw.delete(LEASE_KEY)
        await until(lambda: "leader" in (role_of(first), role_of(second)), "a new election")
        assert sorted([role_of(first) or "", role_of(second) or ""]) == ["follower", "leader"]
    finally:
        await second.aclose()
        await first.aclose()


async def test_followers_receive_edits_pushed_by_the_leader(convex: LocalConvex, redis_url: str) -> None:
    leader, follower = host(convex, redis_url), host(convex, redis_url)
    try:
        await follower.get_full_prompt(PRIYA)  # a held agent: its new version is loaded before use
        edit(convex, PRIYA, "Pushed: open late on Fridays.")
        await until_served([leader, follower], PRIYA, "Pushed: open late on Fridays.")
        result = await follower.get_full_prompt(PRIYA)
        assert fleet_of(follower).batches_applied > 0
    finally:
        await follower.aclose()
        await leader.aclose()
    assert (result.source, result.stale) == ("ram", False)


@pytest.fixture
def follower_user(redis_server: RedisServer, raw: redis_sync.Redis) -> Iterator[str]:
    """A Redis user the test can forbid the fleet's channel (which drops its subscription
    and refuses it again) while every other command keeps working."""
    raw.acl_setuser("follower", enabled=True, passwords=["+pw"], keys=["*"], channels=["*"], commands=["+@all"])
    yield redis_server.url.replace("redis://", "redis://follower:pw@")
    raw.acl_deluser("follower")


async def test_a_follower_whose_subscription_drops_falls_back_to_polling(
    convex: LocalConvex, redis_url: str, raw: redis_sync.Redis, follower_user: str
) -> None:
    leader, follower = host(convex, redis_url), host(convex, follower_user)
    try:
        await until(lambda: fleet_of(follower).subscribed, "the follower to subscribe")
        await follower.get_full_prompt(MARCO)
        edit(convex, MARCO, "Before the drop.")
        await until_served([follower], MARCO, "Before the drop.")
        # The channel is forbidden: Redis drops the subscription and refuses a new one.
        raw.acl_setuser("follower", enabled=True, reset_channels=True)
        await until(lambda: not fleet_of(follower).subscribed, "the subscription to drop")
        edit(convex, MARCO, "After the drop.")
        await until_served([follower], MARCO, "After the drop.")
        # Counted once the poll has finished, just after it served the edit: wait for it.
        await until(lambda: fleet_of(follower).own_polls > 0, "the follower to poll Convex itself")
        assert role_of(leader) == "leader"  # the leader was alive all along
    finally:
        await follower.aclose()
        await leader.aclose()


@pytest.mark.slow
async def test_no_edit_is_lost_when_the_leader_is_killed(convex: LocalConvex, redis_server: RedisServer) -> None:
    redis_server.flush()
    inbox: queue.Queue[tuple[int, Event]] = queue.Queue()
    leader = HostProcess.start(0, host_env(convex, redis_server, REFRESH), [PRIYA], 0.1, inbox)
    followers: list[AgentConfigService] = []
    try:
        wait_for(inbox, lambda _i, e: e["ev"] == "role" and e["role"] == "leader", timeout=60)
        followers = [host(convex, redis_server.url), host(convex, redis_server.url)]
        for follower in followers:
            await follower.get_full_prompt(PRIYA)
        edit(convex, PRIYA, "Before the kill.")
        await until_served(followers, PRIYA, "Before the kill.")
        leader.kill()  # SIGKILL: no release of the lease, no goodbye
        edit(convex, PRIYA, "During the gap.")
        edit(convex, MARCO, "Also during the gap.")
        await until(lambda: "leader" in [role_of(f) for f in followers], "another host to take the lease")
        await until_served(followers, PRIYA, "During the gap.")
        await until_served(followers, MARCO, "Also during the gap.")
        edit(convex, PRIYA, "After the takeover.")
        await until_served(followers, PRIYA, "After the takeover.")
    finally:
        for follower in followers:
            await follower.aclose()
        leader.stop()


@pytest.mark.parametrize(
    "raw_batch",
    [
        b"\x80 not json",
        b"[1, 2, 3]",
        b'{"leader": "h", "cursorMs": "NaN", "pollSeconds": 0, "rows": []}',
        b'{"leader": "h", "cursorMs": 1e999, "pollSeconds": 0, "rows": []}',
        b'{"leader": "h", "cursorMs": 1, "pollSeconds": 0, "rows": [{"agentId": "a", "updatedAt": true}]}',
        b'{"leader": "h", "cursorMs": 1, "pollSeconds": 0, "rows": [{"agentId": "", "updatedAt": 1}]}',
        b'{"leader": "h", "cursorMs": 1, "pollSeconds": 0, "rows": ["a"]}',
    ],
)
def test_a_malformed_batch_is_a_typed_rejection(raw_batch: bytes) -> None:
    with pytest.raises(FleetMessageError):
        decode_batch(raw_batch)


def test_a_batch_round_trips_with_its_deletes() -> None:
    rows = [AgentVersion("a", 1.0), AgentVersion("b", 2.5, deleted=True)]
    assert decode_batch(encode_batch("host", rows, 10.0, 0.25)) == ("host", rows, 10.0, 0.25)


async def test_garbage_on_the_channel_does_not_stop_a_follower(
    convex: LocalConvex, redis_url: str, raw: redis_sync.Redis
) -> None:
    leader, follower = host(convex, redis_url), host(convex, redis_url)
    try:
        await until(lambda: fleet_of(follower).subscribed, "the follower to subscribe")
        await follower.get_full_prompt(PRIYA)
        raw.publish("voiceagent:fleet:changes", b"\x80 garbage")
        raw.publish("voiceagent:fleet:changes", b'{"rows": [{"agentId": 5}]}')
        edit(convex, PRIYA, "After the garbage.")
        applied = fleet_of(follower).batches_applied
        await until_served([follower], PRIYA, "After the garbage.")
        await until(lambda: fleet_of(follower).batches_applied > applied, "a batch after the garbage")
        assert fleet_of(follower).subscriptions == 1  # the subscription never dropped
    finally:
        await follower.aclose()
        await leader.aclose()


async def test_a_published_cursor_from_the_future_does_not_hide_later_edits(
    convex: LocalConvex, redis_url: str, raw: redis_sync.Redis
) -> None:
    raw.set(LEASE_KEY, "intruder", px=60_000)  # a leader that is not one of ours
    follower = host(convex, redis_url)
    try:
        await until(lambda: fleet_of(follower).subscribed, "the follower to subscribe")
        await follower.get_full_prompt(MARCO)
        batch = encode_batch("intruder", [], time.time() * 1000 + 1e9, 0.0)  # a cursor 11 days ahead
        raw.publish("voiceagent:fleet:changes", batch)
        await until(lambda: fleet_of(follower).batches_applied == 1, "the batch to be applied")
        # The intruder publishes nothing more: the follower polls for itself, from a sane cursor.
        edit(convex, MARCO, "Seen despite the future cursor.")
        await until_served([follower], MARCO, "Seen despite the future cursor.")
    finally:
        await follower.aclose()
