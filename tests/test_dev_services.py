"""The dev services the tests start (devtools/processes.py): a port taken between
``free_port`` picking it and the server binding it costs a retry, not a failed run."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator

import pytest

from devtools import processes
from devtools.processes import ServiceStartError, start_livekit, start_redis
from tests.conftest import unavailable


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A loopback port some other process holds."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield int(holder.getsockname()[1])


def first_pick(port: int, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Make ``free_port`` answer ``port`` first (as if taken after it was picked); return the picks."""
    picks: list[int] = []
    real: Callable[[], int] = processes.free_port

    def pick() -> int:
        picks.append(port if not picks else real())
        return picks[-1]

    monkeypatch.setattr(processes, "free_port", pick)
    return picks


def test_redis_starts_on_a_new_port_when_its_first_was_taken(taken_port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    picks = first_pick(taken_port, monkeypatch)
    try:
        server = start_redis()
    except ServiceStartError as exc:
        if "not installed" in str(exc):
            unavailable(str(exc))
        raise
    try:
        assert picks[0] == taken_port and len(picks) == 2
        assert server.url == f"redis://127.0.0.1:{picks[1]}/0"
        server.flush()  # it answers
    finally:
        server.stop()


def test_livekit_starts_on_new_ports_when_its_first_was_taken(taken_port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    picks = first_pick(taken_port, monkeypatch)
    try:
        server = start_livekit(timeout=30)
    except ServiceStartError as exc:
        if "is missing" in str(exc):
            unavailable(str(exc))
        raise
    try:
        assert picks[0] == taken_port
        assert server.url != f"ws://127.0.0.1:{taken_port}"
        with socket.create_connection(("127.0.0.1", int(server.url.rsplit(":", 1)[1])), timeout=5):
            pass  # it listens
    finally:
        server.stop()


def test_a_port_asked_for_by_number_is_not_swapped(taken_port: int) -> None:
    try:
        start_livekit(timeout=30, port=taken_port)
    except ServiceStartError as exc:
        if "is missing" in str(exc):
            unavailable(str(exc))
        assert "address already in use" in str(exc)
    else:
        pytest.fail("livekit-server started on a port another process holds")
