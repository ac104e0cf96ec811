"""The load test's workload generator and correctness checker, and a small run of every
strategy through the real command (its figures are not asserted, its shape is)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

from bench.loadtest.checker import Served, VersionHistory, count_wrong, is_wrong
from bench.loadtest.strategies import STRATEGIES
from bench.loadtest.workload import Workload, join_plan, seed_agents, zipf_weights
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
