"""The RAM tier's core: an LRU bound under aiocache, safe from many threads."""

from __future__ import annotations

import asyncio
import threading

import pytest

from services.freshness.version_index import VersionIndex
from services.tiers.ram_cache import BoundedMemoryCache, LruDict


def test_lru_dict_drops_the_least_recently_used_and_reports_it() -> None:
    evicted: list[tuple[str, int]] = []
    lru: LruDict[str, int] = LruDict(2, on_evict=lambda k, v: evicted.append((k, v)))
    lru["a"] = 1
    lru["b"] = 2
    assert lru["a"] == 1  # a is now the most recent
    lru["c"] = 3
    assert sorted(lru) == ["a", "c"]
    assert evicted == [("b", 2)]
    assert lru.peek("a") == 1
    with pytest.raises(ValueError):
        LruDict(0)


async def test_aiocache_api_keeps_the_bound_and_clear_keeps_the_bounded_storage() -> None:
    cache = BoundedMemoryCache(3)
    for i in range(10):
        await cache.set(f"agent{i}:1", i)
    assert len(cache) == 3
    assert await cache.get("agent0:1") is None
    assert await cache.get("agent9:1") == 9
    await cache.clear()
    for i in range(5):
        await cache.set(f"agent{i}:2", i)
    assert len(cache) == 3


def test_threads_with_their_own_loops_never_break_the_bound() -> None:
    cache = BoundedMemoryCache(50)
    errors: list[BaseException] = []

    def worker(offset: int) -> None:
        async def run() -> None:
            for i in range(2000):
                key = f"a{(offset * 7919 + i) % 400}:1"
                await cache.set(key, i)
                await cache.get(key)
                if i % 50 == 0:
                    await cache.delete(key)

        try:
            asyncio.run(run())
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(cache) <= 50


def test_version_index_only_moves_forward_and_polls_confirm_known_versions() -> None:
    index = VersionIndex()
    assert index.observe("a", 10.0, confirmed_at=100.0) is True
    assert index.observe("a", 9.0, confirmed_at=200.0) is False  # a late feed row
    assert index.get("a") == 10.0
    assert index.confirmed_at("a", 10.0) == 100.0
    index.confirm_all(150.0)
    assert index.confirmed_at("a", 10.0) == 150.0
    assert index.confirmed_at("a", 9.0) is None
    assert index.observe("a", 11.0, confirmed_at=160.0) is True
    assert index.confirmed_at("a", 11.0) == 160.0
