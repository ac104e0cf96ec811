"""``python -m bench.capacity``: its verdict rule, its soak slope, and a tiny run of the real
command (talking calls through livekit-server, the OpenAI stand-in and the worker started
by its real command), whose figures are not asserted, their presence and sense are."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.capacity.soak import residual_sd, slope_per_100
from bench.capacity.steps import capacity_of
from tests.conftest import REPO, project_free_env


def step(calls: int, *, lost: int = 0, turn_p95: float | None = 2000.0, gap: float = 0.0) -> dict[str, Any]:
    return {"calls": calls, "lost_calls": lost, "turn_ms_p95": turn_p95, "longest_gap_ms": gap}


def test_capacity_is_the_largest_step_that_keeps_every_call_and_its_pace() -> None:
    assert capacity_of([step(1), step(2, turn_p95=2150.0), step(4, turn_p95=2199.0)]) == 4
    assert capacity_of([step(1), step(2), step(4, lost=1)]) == 2  # a lost call
    assert capacity_of([step(1), step(2), step(4, turn_p95=2201.0)]) == 2  # turn p95 over 1-call p95 + 200 ms
    assert capacity_of([step(1), step(2), step(4, gap=201.0)]) == 2  # a gap over 200 ms
    assert capacity_of([step(1, lost=1), step(2, lost=1)]) == 0
    assert capacity_of([step(1), step(2, turn_p95=None)]) == 1  # no turn measured: no verdict
    assert capacity_of([]) == 0


def test_soak_growth_is_the_least_squares_slope_per_100_calls() -> None:
    assert slope_per_100([(200, 500.0), (300, 500.0), (400, 500.0)]) == 0.0
    assert slope_per_100([(200, 500.0), (300, 502.0), (400, 504.0)]) == 2.0
    assert slope_per_100([(200, 10.0), (300, 13.0), (400, 10.0)]) == 0.0  # noise, no trend
    assert slope_per_100([(200, 1.0)]) is None
    assert residual_sd([(200, 500.0), (300, 502.0), (400, 504.0)]) == 0.0  # on the line: no noise
    assert residual_sd([(200, 10.0), (300, 13.0), (400, 10.0)]) == pytest.approx(1.732, abs=0.001)


@pytest.mark.slow
def test_a_tiny_run_reports_every_figure_per_step_for_both_workers(tmp_path: Path) -> None:
    out = tmp_path / "capacity.json"
    result = subprocess.run(
        [sys.executable, "-m", "bench.capacity", "--executor", "thread", "--calls", "1", "--seconds", "4",
         "--baseline", "--soak", "4", "--soak-sample-every", "2", "--json", str(out)],
        cwd=REPO, env=project_free_env(), capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert figures["cpus"] >= 1 and figures["standin_delays_ms"]["llm_ttft_ms"] > 0
    for worker in (figures, figures["baseline"]):
        (only,) = worker["steps"]
        assert (only["calls"], only["lost_calls"], only["errors"]) == (1, 0, []), only
        assert only["turns"] >= 1 and only["turn_ms_p50"] > 0 and only["first_audio_ms_p95"] > 0
        assert only["worker_cpu_pct"] > 0 and only["cpu_seconds_per_call_minute"] > 0
        assert only["callers_cpu_pct"] > 0
        assert only["pss_mb"] > 100  # a worker with its local models
        assert only["longest_gap_ms"] >= 0 and only["audio_gaps"] >= 0
        assert worker["capacity"] == 1 and worker["calls_per_core"] == round(1 / figures["cpus"], 2)
    assert figures["steps"][0]["loop_lag_p99_ms"] > 0  # the worker's job_ended reports its loop
    assert figures["baseline"]["worker"] == "bench.stock_worker"
    soak = figures["soak"]
    assert soak["lost_calls"] == 0 and [s["calls"] for s in soak["samples"]] == [0, 2, 4]
    for sample in soak["samples"]:
        assert sample["rss_mb"] > 100 and sample["fds"] > 0 and sample["threads"] > 0
        assert sample["asyncio_tasks"] is not None and sample["asyncio_tasks"] > 0  # the worker's gauge
    assert set(soak["growth_per_100_calls"]) == {"rss_mb", "pss_mb", "fds", "threads", "asyncio_tasks"}
    assert set(soak["residual_sd"]) == set(soak["growth_per_100_calls"])
    assert "capacity 1 calls" in result.stdout and "stock worker" in result.stdout
