"""What a worker reports about its own loops: the job loop's lag (``job_ended``) and the
tasks its call loops hold (the ``agent_asyncio_tasks`` gauge the soak reads)."""

from __future__ import annotations

import asyncio
import time

import pytest
from prometheus_client import REGISTRY

from agent.loop_lag import INTERVAL_SECONDS, LoopLag
from agent.process_gauges import asyncio_tasks, watch_loop


async def test_a_blocked_loop_shows_as_lag_and_an_idle_one_does_not() -> None:
    lag = LoopLag()
    lag.start()
    await asyncio.sleep(INTERVAL_SECONDS * 4)
    idle = lag.figures()
    samples, idle_max = idle["loopLagSamples"], idle["loopLagMaxMs"]
    assert samples is not None and samples >= 2 and idle_max is not None and idle_max < 100
    asyncio.get_running_loop().call_soon(time.sleep, 0.3)  # a callback that blocks, as a TLS build does
    await asyncio.sleep(0.3 + INTERVAL_SECONDS * 2)
    figures = await lag.stop()
    assert figures["loopLagMaxMs"] is not None and figures["loopLagMaxMs"] >= 250
    assert (await lag.stop()) == figures  # stopped: no more samples


async def test_no_samples_report_no_lag_rather_than_zero() -> None:
    assert LoopLag().figures() == {"loopLagP99Ms": None, "loopLagMaxMs": None, "loopLagSamples": 0}


async def test_the_task_gauge_counts_the_watched_loops_tasks() -> None:
    watch_loop(asyncio.get_running_loop())
    before = asyncio_tasks()
    blockers = [asyncio.create_task(asyncio.sleep(60)) for _ in range(3)]
    try:
        assert asyncio_tasks() == before + 3
        assert REGISTRY.get_sample_value("agent_asyncio_tasks") == pytest.approx(before + 3)
    finally:
        for task in blockers:
            task.cancel()
        await asyncio.gather(*blockers, return_exceptions=True)
    assert asyncio_tasks() == before
