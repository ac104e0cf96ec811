"""The worker's load: share of its job slots in use, CPU only when saturated for a window."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent.admission.capacity import (
    CALLS_PER_CPU,
    THREAD_CALLS_PER_PROCESS,
    CapacityPolicy,
    CpuSaturation,
    available_cpus,
    cgroup_cpu_limit,
    default_max_jobs,
)


def test_load_is_the_share_of_slots_in_use_scaled_to_the_server_target_load() -> None:
    policy = CapacityPolicy(max_jobs=8, target_load=0.7)
    assert policy.load(0) == 0
    assert policy.load(4) == pytest.approx(0.35)
    assert policy.load(7) < 0.7  # the server (target_load 0.7) still offers the eighth job
    assert policy.load(8) == pytest.approx(0.7)  # full exactly at max_jobs
    assert policy.load(20) == pytest.approx(0.7)


def test_one_job_costs_one_slot_of_load_whatever_the_cpu_count() -> None:
    policy = CapacityPolicy(max_jobs=5, target_load=1.0)
    assert [policy.load(n) for n in range(6)] == pytest.approx([0, 0.2, 0.4, 0.6, 0.8, 1.0])


def test_sustained_cpu_saturation_marks_the_worker_full() -> None:
    policy = CapacityPolicy(max_jobs=8, target_load=0.7)
    assert policy.load(1, cpu_saturated=True) == pytest.approx(0.7)


def test_a_start_up_cpu_spike_is_not_saturation() -> None:
    window = CpuSaturation(window_seconds=30, level=0.95)
    for second in range(5):  # a burst of job start-ups: 5 s at 100%
        window.add(float(second), 1.0)
    assert not window.saturated()


def test_cpu_held_at_the_level_for_the_whole_window_is_saturation() -> None:
    window = CpuSaturation(window_seconds=30, level=0.95)
    for second in range(31):
        window.add(float(second), 0.97)
    assert window.saturated()
    for second in range(31, 46):  # half a window of idle brings the mean down
        window.add(float(second), 0.1)
    assert not window.saturated()


def test_a_level_above_one_turns_the_cpu_rule_off() -> None:
    window = CpuSaturation(window_seconds=10, level=1.5)
    for second in range(20):
        window.add(float(second), 1.0)
    assert not window.saturated()


def test_default_max_jobs_is_the_measured_calls_per_cpu_and_at_least_one() -> None:
    assert default_max_jobs("process", 2) == 2 * CALLS_PER_CPU["process"] == 8
    assert default_max_jobs("process", 0.1) == 1
    assert default_max_jobs("thread", 1) == CALLS_PER_CPU["thread"] == 6
    assert default_max_jobs("thread", 0.5) == 3  # a half-CPU quota: half the slots


def test_a_thread_worker_never_defaults_past_what_one_process_was_measured_to_carry() -> None:
    assert default_max_jobs("thread", 2) == default_max_jobs("thread", 16) == THREAD_CALLS_PER_PROCESS
    assert default_max_jobs("process", 16) == 16 * CALLS_PER_CPU["process"]  # processes have a GIL each


def test_a_cgroup_quota_caps_the_cpus_the_default_is_sized_from(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("150000 100000\n")  # cgroup v2: 1.5 CPUs
    assert cgroup_cpu_limit(tmp_path) == 1.5
    assert available_cpus(tmp_path) == min(1.5, len(os.sched_getaffinity(0)))
    (tmp_path / "cpu.max").write_text("max 100000\n")  # no quota
    assert cgroup_cpu_limit(tmp_path) is None
    assert available_cpus(tmp_path) == len(os.sched_getaffinity(0))
    (tmp_path / "cpu.max").unlink()
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("50000\n")  # cgroup v1: half a CPU
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpu_limit(tmp_path) == 0.5 and available_cpus(tmp_path) == 0.5
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert cgroup_cpu_limit(tmp_path) is None
    assert cgroup_cpu_limit(tmp_path / "absent") is None


def test_the_default_follows_the_cpus_this_process_may_run_on() -> None:
    """``taskset -c 0 python -m agent start`` on a 2-CPU host: one CPU's slots, not two."""
    before = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {min(before)})
        assert available_cpus(Path("/nonexistent")) == 1.0
        assert default_max_jobs("process") == CALLS_PER_CPU["process"]  # one CPU's slots, not the host's
    finally:
        os.sched_setaffinity(0, before)


def test_a_policy_without_slots_is_refused() -> None:
    with pytest.raises(ValueError, match="max_jobs"):
        CapacityPolicy(max_jobs=0, target_load=0.7)
    with pytest.raises(ValueError, match="target_load"):
        CapacityPolicy(max_jobs=4, target_load=1.5)


def test_the_worker_reports_its_status_to_livekit_server_every_half_second() -> None:
    from livekit.agents import worker as livekit_worker

    from agent.admission.capacity import STATUS_INTERVAL_SECONDS, report_status_every

    before = livekit_worker.UPDATE_STATUS_INTERVAL
    try:
        report_status_every(STATUS_INTERVAL_SECONDS)
        assert livekit_worker.UPDATE_STATUS_INTERVAL == STATUS_INTERVAL_SECONDS == 0.5
        with pytest.raises(ValueError, match="positive"):
            report_status_every(0)
    finally:
        livekit_worker.UPDATE_STATUS_INTERVAL = before
