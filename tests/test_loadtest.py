"""The load test's workload generator and correctness checker, and a small run of every
strategy through the real command (its figures are not asserted, its shape is)."""

from __future__ import annotations

import asyncio
import itertools
import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from bench.loadtest.baselines import Resolved
from bench.loadtest.checker import Served, VersionHistory, count_wrong, is_wrong
from bench.loadtest.strategies import STRATEGIES, Target, _in_process
from bench.loadtest.workload import Workload, arrival_offsets, join_plan, seed_agents, zipf_weights
from prompts import build_full_prompt
from tests.conftest import REPO, project_free_env


def test_join_plan_is_seeded_and_skewed_by_zipf() -> None:
    workload = Workload(agents=50, zipf=1.2, joins=5000, seed=3)
    plan = join_plan(workload)
    assert plan == join_plan(workload)
    assert plan != join_plan(Workload(agents=50, zipf=1.2, joins=5000, seed=4))
    counts = Counter(plan)
    assert counts[0] > counts[1] > counts[10] > counts.get(49, 0)
    assert counts[0] / len(plan) > 0.15  # the head of a Zipf(1.2) over 50 ranks holds ~22%


def test_zipf_zero_is_uniform() -> None:
    assert zipf_weights(4, 0.0) == [1.0, 1.0, 1.0, 1.0]
    counts = Counter(join_plan(Workload(agents=4, zipf=0.0, joins=8000)))
    assert all(1700 < count < 2300 for count in counts.values())


def test_arrivals_are_seeded_poisson_at_the_rate_and_leave_the_plan_alone() -> None:
    workload = Workload(joins=4000, rate=20.0, seed=3)
    offsets = arrival_offsets(workload)
    assert offsets is not None and offsets == arrival_offsets(workload)
    assert offsets != arrival_offsets(Workload(joins=4000, rate=20.0, seed=4))
    assert len(offsets) == 4000 and all(a < b for a, b in itertools.pairwise(offsets))
    assert 180 < offsets[-1] < 220  # 4000 arrivals at 20/s take ~200 s
    gaps = [b - a for a, b in itertools.pairwise([0.0, *offsets])]
    assert sum(gap < 0.05 for gap in gaps) / len(gaps) == pytest.approx(0.63, abs=0.03)  # 1 - e^-1: exponential
    assert join_plan(workload) == join_plan(Workload(joins=4000, seed=3))
    assert arrival_offsets(Workload(joins=10)) is None  # rate 0: a closed loop


def test_open_loop_joins_wait_for_their_arrival_and_for_a_slot() -> None:
    arrivals = [0.0, 0.05, 0.1, 0.1, 0.1, 0.3]
    starts: list[float] = []
    running, most = 0, 0

    async def resolve(agent_id: str) -> Resolved:
        nonlocal running, most
        starts.append(time.monotonic())
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.02)
        running -= 1
        return Resolved(prompt="p", updated_at=1.0, built=False, cache_hit=True)

    async def run() -> float:
        began = time.monotonic()
        target = Target(convex=None, redis_url=None, agent_ids=["a"], plan=[0] * len(arrivals),  # type: ignore[arg-type]
                        concurrency=2, refresh_seconds=2.0, progress=lambda _: None, arrivals=arrivals)  # fmt: skip
        outcome = await _in_process(target, resolve)
        assert len(outcome.served) == len(arrivals)
        return began

    began = asyncio.run(run())
    assert all(start - began >= arrival for start, arrival in zip(sorted(starts), arrivals, strict=True))
    assert most == 2  # three arrive together at 0.1 s; two slots


def test_a_negative_rate_is_refused() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench.loadtest", "--rate", "-1"],
        cwd=REPO, env=project_free_env(), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2 and "--rate must be 0 (closed loop) or more" in result.stderr


def test_plot_without_matplotlib_is_one_line_naming_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Refused before any service starts: exit 2 and the install command, no traceback."""
    from bench.loadtest.__main__ import main

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # what an install without the extra sees
    assert main(["--joins", "1", "--plot", str(tmp_path / "out.png")]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines() == ["loadtest: --plot needs matplotlib, the plot extra: pip install '.[plot]'"]
    assert not (tmp_path / "out.png").exists()


def test_seed_agents_cover_the_domains_and_mark_the_legacy_share() -> None:
    docs = seed_agents(Workload(agents=20, legacy_fraction=0.25))
    legacy = [doc for doc in docs if "fullPrompt" not in doc]
    assert len(legacy) == 5
    assert {doc["config"]["domain"] for doc in docs} == {"dental", "general", "real_estate", "restaurant"}
    assert all(doc["fullPrompt"] == build_full_prompt(doc) for doc in docs if "fullPrompt" in doc)


def history() -> VersionHistory:
    versions = VersionHistory()
    versions.add("a", float("-inf"), 100.0, "v1")
    versions.add("a", 50.0, 200.0, "v2")  # edited at t=50
    return versions


def test_checker_accepts_the_current_version_and_old_ones_within_the_bound() -> None:
    assert not is_wrong(Served("a", 40.0, 100.0, "v1"), history(), bound_seconds=2)
    assert not is_wrong(Served("a", 51.0, 100.0, "v1"), history(), bound_seconds=2)  # edit 1 s ago
    assert not is_wrong(Served("a", 60.0, 200.0, "v2"), history(), bound_seconds=2)


def test_checker_flags_old_versions_past_the_bound_and_mismatched_text() -> None:
    assert is_wrong(Served("a", 53.0, 100.0, "v1"), history(), bound_seconds=2)
    assert is_wrong(Served("a", 60.0, 200.0, "v1"), history(), bound_seconds=2)  # v2's stamp, v1's text
    assert is_wrong(Served("a", 60.0, 300.0, "v3"), history(), bound_seconds=2)  # a version that never was
    assert is_wrong(Served("b", 60.0, 100.0, "v1"), history(), bound_seconds=2)
    joins = [Served("a", 53.0, 100.0, "v1"), Served("a", 54.0, 200.0, "v2")]
    assert count_wrong(joins, history(), bound_seconds=2) == 1


def run_loadtest(*args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "bench.loadtest", *args],
        cwd=REPO,
        env=project_free_env(),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.mark.slow
def test_every_strategy_runs_through_the_real_command(tmp_path: Path) -> None:
    out, chart = tmp_path / "out.json", tmp_path / "latency.png"
    result = run_loadtest("--agents", "4", "--joins", "12", "--concurrency", "2", "--edits-per-minute", "60",
                          "--latency-ms", "5", "--json", str(out), "--plot", str(chart))  # fmt: skip
    report = json.loads(out.read_text())
    assert report["workload"]["joins"] == 12 and report["workload"]["agents"] == 4
    assert list(report["strategies"]) == list(STRATEGIES)
    fields = {"joins", "p50_ms", "p95_ms", "p99_ms", "max_ms", "db_reads", "builds", "stale_served", "errors",
              "wrong_prompts", "cache_bytes"}  # fmt: skip
    for name, figures in report["strategies"].items():
        assert fields <= set(figures), name
        assert figures["joins"] == 12 and figures["errors"] == 0, (name, figures)
    for name in ("no-cache", "seed"):  # they read Convex on every join: never behind
        assert report["strategies"][name]["wrong_prompts"] == 0
        assert report["strategies"][name]["db_reads"] == 12
    assert report["strategies"]["no-cache"]["builds"] == 12
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for name in STRATEGIES:
        assert name in result.stdout  # the table


@pytest.mark.slow
def test_livekit_mode_dispatches_the_worker_strategies_through_a_real_server(tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    result = run_loadtest("--agents", "3", "--joins", "8", "--concurrency", "4", "--latency-ms", "5",
                          "--mode", "livekit", "--strategy", "seed", "--strategy", "tiered",
                          "--json", str(out))  # fmt: skip
    strategies = json.loads(out.read_text())["strategies"]
    assert strategies["tiered"]["livekit_dispatches"] == 8
    assert strategies["tiered"]["livekit_lost_after_retries"] == 0
    assert strategies["tiered"]["livekit_attempts_mean"] >= 1
    assert strategies["tiered"]["livekit_dispatch_p99_ms"] is not None
    assert strategies["seed"]["livekit_dispatch_p50_ms"] is None  # not a worker strategy
    assert "first dispatch -> agent ready" in result.stdout


@pytest.mark.slow
def test_audio_mode_reports_what_each_row_s_callers_heard(tmp_path: Path) -> None:
    """``--audio``: talking calls through a real livekit-server and the OpenAI stand-in,
    one row per way of greeting; every call heard its greeting and its answer."""
    out = tmp_path / "out.json"
    result = run_loadtest("--mode", "livekit", "--audio", "--agents", "1", "--joins", "2",
                          "--audio-concurrency", "1", "--executors", "thread", "--latency-ms", "5",
                          "--stt-delay-ms", "0", "--llm-ttft-ms", "0", "--tts-ttfb-ms", "0",
                          "--json", str(out))  # fmt: skip
    rows = {row["row"]: row for row in json.loads(out.read_text())["audio"]}
    assert set(rows) == {"cache", "tts", "seed"}
    for name, row in rows.items():
        assert (row["calls"], row["lost_calls"]) == (2, 0), (name, row)
        for field in ("first_audio_ms_p50", "first_audio_ms_p95", "turn_ms_p50", "turn_ms_p95", "turn_ms_p99"):
            assert row[field] > 0, (name, field, row)
    assert rows["cache"]["greeting_sources"].get("cache", 0) >= 2  # the measured calls, after the warm-up
    assert set(rows["tts"]["greeting_sources"]) == {"tts"}  # AGENT_GREETING_CACHE=false: never the cache
    assert "first audio p50" in result.stdout
