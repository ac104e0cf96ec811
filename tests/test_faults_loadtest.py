"""The load test under deletes and signals: a prompt served for a deleted agent counts as
wrong, and killing ``python -m bench.loadtest`` (SIGTERM or Ctrl-C) leaves none of the
services it started running."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from bench.loadtest.checker import Served, VersionHistory, is_wrong
from tests.conftest import REPO, project_free_env
from tests.helpers import wait_for


def history_with_a_delete() -> VersionHistory:
    versions = VersionHistory()
    versions.add("a", float("-inf"), 100.0, "v1")
    versions.delete("a", 50.0, 101.0)  # deleted at t=50
    return versions


def test_a_prompt_served_for_an_agent_deleted_past_the_bound_is_wrong() -> None:
    assert is_wrong(Served("a", 53.0, 100.0, "v1"), history_with_a_delete(), bound_seconds=2)
    assert is_wrong(Served("a", 53.0, 101.0, ""), history_with_a_delete(), bound_seconds=2)


def test_a_prompt_served_within_the_bound_of_a_delete_is_not_wrong() -> None:
    assert not is_wrong(Served("a", 40.0, 100.0, "v1"), history_with_a_delete(), bound_seconds=2)
    assert not is_wrong(Served("a", 51.0, 100.0, "v1"), history_with_a_delete(), bound_seconds=2)


def _descendants(root: int) -> set[int]:
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] != "Z":
            parents[int(entry.name)] = int(fields[1])
    found: set[int] = set()
    frontier = {root}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_killing_the_load_test_stops_every_service_it_started(signum: signal.Signals) -> None:
    args = [sys.executable, "-m", "bench.loadtest", "--agents", "3", "--joins", "1000000", "--concurrency", "1",
            "--latency-ms", "0", "--edits-per-minute", "0",
            "--strategy", "no-cache", "--strategy", "tiered-process-redis"]  # fmt: skip
    process = subprocess.Popen(
        args, cwd=REPO, env=project_free_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    children: set[int] = set()
    try:
        assert process.stderr is not None
        # The progress bar is drawn once both services are up and joins are running.
        seen = ""
        while "no-cache" not in seen:
            chunk = process.stderr.read(16)
            assert chunk, "the load test exited before its joins started"
            seen = seen[-64:] + chunk
        children = _descendants(process.pid)
        assert children, "the load test started no services"
        process.send_signal(signum)
        assert process.wait(90) != 0
        # processes already signalled take a moment to go
        wait_for(lambda: not any(_alive(pid) for pid in children), 15, interval=0.1)
        left = sorted(pid for pid in children if _alive(pid))
        assert left == [], f"still running after the load test exited: {left}"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        for pid in children:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
