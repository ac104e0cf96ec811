"""The connect gate: one connect at a time per process, a turn that cannot be lost."""

from __future__ import annotations

import asyncio

import pytest

from agent.connect.gate import ConnectGate


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def has_a_free_turn(gate: ConnectGate) -> bool:
    """Whether a connect could enter now (through the gate's own API: the turn taken to
    find out is given back)."""
    token = gate.try_enter()
    if token is None:
        return False
    gate.leave(token)
    return True


def test_one_turn_at_a_time_and_leaving_frees_it() -> None:
    gate = ConnectGate(clock=Clock())
    first = gate.try_enter()
    assert first is not None
    assert gate.try_enter() is None
    gate.leave(first)
    assert gate.try_enter() is not None


def test_a_turn_held_past_its_limit_is_given_to_the_next_connect() -> None:
    clock = Clock()
    gate = ConnectGate(max_hold_seconds=10, clock=clock)
    stuck = gate.try_enter()
    assert stuck is not None
    clock.now = 10.0  # a connect that never returned
    later = gate.try_enter()
    assert later is not None
    gate.leave(stuck)  # the stuck one finally ends: it must not free the new holder's turn
    assert not has_a_free_turn(gate)


async def test_a_waiter_cancelled_before_its_turn_holds_nothing() -> None:
    gate = ConnectGate(clock=Clock(), poll_seconds=0.001)
    holder = gate.try_enter()
    assert holder is not None
    entered = asyncio.Event()

    async def wait_for_turn() -> None:
        async with gate.turn():
            entered.set()

    waiter = asyncio.create_task(wait_for_turn())
    await asyncio.sleep(0.01)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    gate.leave(holder)
    assert not entered.is_set()
    assert has_a_free_turn(gate)
    async with asyncio.timeout(5):
        async with gate.turn():
            assert not has_a_free_turn(gate)
    assert has_a_free_turn(gate)
