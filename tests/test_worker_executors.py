"""Jobs through livekit-agents' real executors (``simulate_job``): THREAD mode shares the
RAM tier between jobs; PROCESS mode starts every job in a fresh process, which reads the
host tier (tests/test_worker_host_tier.py) and, without it, the Redis tier."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from devtools.processes import LocalConvex
from services.store.file import local_backend_id
from tests.conftest import REPO, project_free_env

PRIYA_ROOM = f"agent-{local_backend_id(0)}"


def run_driver(
    convex: LocalConvex,
    tmp_path: Path,
    rooms: list[str],
    env: dict[str, str],
    *,
    concurrency: int = 1,
    arrivals: list[float] | None = None,
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    """Run the rooms through the executor driver; return the process and its report."""
    (tmp_path / "rooms.json").write_text(json.dumps(rooms))
    args = [sys.executable, "-m", "devtools.executor_driver", "--rooms", str(tmp_path / "rooms.json"),
            "--concurrency", str(concurrency), "--out", str(tmp_path / "out.json")]  # fmt: skip
    if arrivals is not None:
        (tmp_path / "arrivals.json").write_text(json.dumps(arrivals))
        args += ["--arrivals", str(tmp_path / "arrivals.json")]
    clean = project_free_env()
    result = subprocess.run(
        args,
        cwd=REPO,
        env={
            **clean,
            "LIVEKIT_URL": "ws://127.0.0.1:9",  # unregistered: never dialled
            "LIVEKIT_API_KEY": "devkey",
            "LIVEKIT_API_SECRET": "secret",
            "CONVEX_URL": convex.url,
            "CONVEX_DEPLOY_KEY": convex.deploy_key,
            "AGENT_MODEL_FACTORY": "devtools.fake_models:recording_session",
            "PROBE_EVENTS": str(tmp_path / "events.jsonl"),
            **env,
        },
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    report: dict[str, Any] = json.loads((tmp_path / "out.json").read_text())
    assert [join.get("error") for join in report["joins"]] == [None] * len(rooms)
    return result, report


def drive(convex: LocalConvex, tmp_path: Path, rooms: list[str], **env: str) -> list[dict[str, Any]]:
    """Run the rooms one after another through the executor driver; return what each job resolved."""
    _, report = run_driver(convex, tmp_path, rooms, env)
    return [join["event"] for join in sorted(report["joins"], key=lambda join: join["dispatchedAt"])]


def test_driver_close_never_waits_on_job_status_updates_nobody_reads(convex: LocalConvex, tmp_path: Path) -> None:
    # 80 jobs send well over the 128 status updates an unregistered worker can queue;
    # unread, the rest wait forever and the worker's close with them. (The close can
    # still outlast the driver's timeout on a THREAD job that does not ack its shutdown,
    # a livekit-agents race; the driver then names what it waited for.)
    rooms = [f"{PRIYA_ROOM}--n{n}" for n in range(80)]
    env = {"AGENT_EXECUTOR": "thread", "PROBE_END_JOB": "0"}
    result, _ = run_driver(convex, tmp_path, rooms, env, concurrency=8)
    assert "_update_job_status" not in result.stderr, result.stderr[-3000:]


def test_driver_with_arrivals_starts_no_join_before_its_arrival(convex: LocalConvex, tmp_path: Path) -> None:
    rooms = [f"{PRIYA_ROOM}--a{n}" for n in range(4)]
    arrivals = [0.0, 0.4, 0.8, 1.2]
    _, report = run_driver(convex, tmp_path, rooms, {"AGENT_EXECUTOR": "thread"}, concurrency=4, arrivals=arrivals)
    offsets = {join["room"]: join["dispatchedAt"] - report["startedAt"] for join in report["joins"]}
    assert all(offsets[room] >= arrival - 0.005 for room, arrival in zip(rooms, arrivals, strict=True)), offsets


def test_thread_executor_second_job_resolves_from_ram_without_a_convex_read(
    convex: LocalConvex, tmp_path: Path
) -> None:
    events = drive(convex, tmp_path, [PRIYA_ROOM, f"{PRIYA_ROOM}--second"], AGENT_EXECUTOR="thread")
    # The first job meets the load on_request started ("db"), or its result ("ram").
    assert events[1]["source"] == "ram"
    assert len({e["pid"] for e in events}) == 1
    assert convex.stats()["byPath"].get("agents:get") == 1


def test_without_the_host_tier_a_job_process_resolves_from_redis(
    convex: LocalConvex, redis_url: str, tmp_path: Path
) -> None:
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("")  # the host tier cannot be created here: the worker runs without it
    rooms = [PRIYA_ROOM, f"{PRIYA_ROOM}--second"]
    events = drive(
        convex,
        tmp_path,
        rooms,
        AGENT_EXECUTOR="process",
        PROMPT_CACHE_REDIS_URL=redis_url,
        PROMPT_HOST_CACHE_DIR=str(blocked / "host"),
    )
    assert events[1]["source"] == "redis"
    assert events[0]["promptHash"] == events[1]["promptHash"]
    assert len({e["pid"] for e in events}) == 2


def test_the_default_host_directory_lives_and_dies_with_the_worker(convex: LocalConvex, tmp_path: Path) -> None:
    temp = tmp_path / "tmp"
    left_by_a_dead_worker = temp / "agent-host-tier-4194000-dead"
    left_by_a_dead_worker.mkdir(parents=True)
    rooms = [PRIYA_ROOM, f"{PRIYA_ROOM}--second"]
    events = drive(convex, tmp_path, rooms, AGENT_EXECUTOR="process", TMPDIR=str(temp))
    assert events[1]["source"] == "host"  # the worker made its own directory under TMPDIR
    assert list(temp.glob("agent-host-tier-*")) == []  # and removed it, and the dead one's


@pytest.mark.parametrize("executor", ["thread", "process"])
def test_each_join_carries_its_job_s_times_as_the_worker_logged_them(
    convex: LocalConvex, tmp_path: Path, executor: str
) -> None:
    """The load test's latencies come from the worker's own events (``job_started``,
    ``job_ended``), read by the driver in THREAD and PROCESS mode alike."""
    rooms = [PRIYA_ROOM, f"{PRIYA_ROOM}--second"]
    _, report = run_driver(convex, tmp_path, rooms, {"AGENT_EXECUTOR": executor, "PROBE_END_JOB": "0.2"})
    for join in report["joins"]:
        assert join["dispatchedAt"] <= join["jobStartedAt"] <= join["promptResolvedAt"], join
        assert join["promptResolvedAt"] - join["dispatchedAt"] < 60, join  # the driver's own join timeout
