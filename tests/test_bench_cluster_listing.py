"""``bench.cluster_listing`` calls a room split exactly when the nodes' listings of it
ever differ, and creates one dispatch per creator at once."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest

from bench import cluster_listing


@dataclass
class FakeNode:
    """A node's server API: ``answers`` are its successive listings (ids), the last repeated."""

    answers: list[list[str]]
    created: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.agent_dispatch = SimpleNamespace(create_dispatch=self._create, list_dispatch=self._list)
        self.room = SimpleNamespace(delete_room=self._delete)
        self._answers: Iterator[list[str]] = iter(self.answers)
        self._last: list[str] = []

    async def _create(self, request: Any) -> None:
        self.created.append(request.room)

    async def _list(self, room: str) -> list[Any]:
        self._last = next(self._answers, self._last)
        return [SimpleNamespace(id=i) for i in self._last]

    async def _delete(self, request: Any) -> None:
        self.deleted.append(request.room)


@pytest.fixture(autouse=True)
def no_pauses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cluster_listing, "SAMPLE_PAUSES", (0.0, 0.0, 0.0))


async def test_a_room_whose_listings_agree_every_time_is_not_split() -> None:
    nodes = [FakeNode([["a", "b"]]), FakeNode([["b", "a"]])]
    assert not await cluster_listing.probe_room(nodes, nodes, "r")  # type: ignore[arg-type]
    assert [n.created for n in nodes] == [["r"], ["r"]]
    assert nodes[0].deleted == ["r"]


async def test_a_room_whose_listings_differ_once_is_split() -> None:
    nodes = [FakeNode([["a", "b"], ["a", "b"], ["a", "b"]]), FakeNode([["a", "b"], ["a"], ["a", "b"]])]
    assert await cluster_listing.probe_room(nodes, nodes, "r")  # type: ignore[arg-type]


async def test_the_baseline_creates_one_dispatch() -> None:
    nodes = [FakeNode([["a"]]), FakeNode([["a"]])]
    assert not await cluster_listing.probe_room(nodes[:1], nodes, "r")  # type: ignore[arg-type]
    assert [n.created for n in nodes] == [["r"], []]
