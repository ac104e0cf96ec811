"""The host tier under the worker's real PROCESS executor (``simulate_job`` through the
executor driver, jobs one at a time from stdin): job processes resolve from what the
main process wrote, see edits the main process picked up, serve it stale while Convex
is down, and a reader killed mid-read leaves the tier usable."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import lmdb
import pytest

from devtools.processes import LocalConvex, ServiceStartError, start_local_convex
from services.store.file import local_backend_id
from services.tiers.host_reader import HostTier, HostTierReader
from tests.conftest import DEMO_SEED, REPO, project_free_env, unavailable
from tests.helpers import wait_for as poll

PRIYA = local_backend_id(0)
WAIT_SECONDS = 30.0


class Worker:
    """The real worker (executor driver, interactive) in a child process."""

    def __init__(self, convex: LocalConvex, tmp_path: Path, **env: str) -> None:
        self.host_dir = tmp_path / "host"
        self._log = (tmp_path / "driver.log").open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "devtools.executor_driver", "--interactive"],
            cwd=REPO,
            env={
                **project_free_env(),
                "LIVEKIT_URL": "ws://127.0.0.1:9",  # unregistered: never dialled
                "LIVEKIT_API_KEY": "devkey",
                "LIVEKIT_API_SECRET": "secret",
                "CONVEX_URL": convex.url,
                "CONVEX_DEPLOY_KEY": convex.deploy_key,
                "AGENT_EXECUTOR": "process",
                "AGENT_MODEL_FACTORY": "devtools.fake_models:recording_session",
                "PROBE_EVENTS": str(tmp_path / "events.jsonl"),
                "PROMPT_HOST_CACHE_DIR": str(self.host_dir),
                "PROMPT_REFRESH_SECONDS": "0.3",
                **env,
            },
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
        )
        self.log_path = tmp_path / "driver.log"

    def join(self, room: str) -> dict[str, Any]:
        """Run one job for ``room``; what it resolved."""
        stdin, stdout = self._pipes()
        stdin.write(room + "\n")
        stdin.flush()
        for line in stdout:
            if line.startswith("JOIN "):
                outcome: dict[str, Any] = json.loads(line[5:])
                assert outcome.get("error") is None, outcome["error"] + self.log_path.read_text()[-3000:]
                event: dict[str, Any] = outcome["event"]
                return event
        raise AssertionError("the driver exited:\n" + self.log_path.read_text()[-3000:])

    def _pipes(self) -> tuple[IO[str], IO[str]]:
        assert self.process.stdin is not None and self.process.stdout is not None
        return self.process.stdin, self.process.stdout

    def close(self) -> None:
        stdin, _ = self._pipes()
        stdin.close()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._log.close()


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[..., Worker]]:
    started: list[Worker] = []

    def start(convex: LocalConvex, **env: str) -> Worker:
        worker = Worker(convex, tmp_path, **env)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.close()


def wait_for(condition: Callable[[], bool], what: str) -> None:
    """Wait for another process to do something (there is no event to subscribe to)."""
    poll(condition, WAIT_SECONDS, what=what)


def holds_version(tier: HostTier, version: float) -> bool:
    found = tier.lookup(PRIYA, None, trust_seconds=60, fresh_seconds=600)
    return found is not None and found.agent.updated_at == version


def gets(convex: LocalConvex) -> int:
    return int(convex.stats()["byPath"].get("agents:get", 0))


@pytest.mark.parametrize("with_redis", [False, True], ids=["host", "host+redis"])
def test_a_second_job_process_resolves_from_the_host_tier_without_a_convex_read(
    convex: LocalConvex, request: pytest.FixtureRequest, start_worker: Callable[..., Worker], with_redis: bool
) -> None:
    env = {"PROMPT_CACHE_REDIS_URL": request.getfixturevalue("redis_url")} if with_redis else {}
    worker = start_worker(convex, **env)
    first = worker.join(f"agent-{PRIYA}--one")
    reads_after_first = gets(convex)
    second = worker.join(f"agent-{PRIYA}--two")
    assert second["source"] == "host"
    assert second["pid"] != first["pid"]
    assert second["promptHash"] == first["promptHash"]
    assert gets(convex) == reads_after_first == 1


def test_an_edit_reaches_the_next_job_process_once_the_main_process_picked_it_up(
    convex: LocalConvex, start_worker: Callable[..., Worker]
) -> None:
    worker = start_worker(convex)
    before = worker.join(f"agent-{PRIYA}--before")
    edited = convex.call("mutation", "agents:update", {"agentId": PRIYA, "systemPrompt": "Edited while calls run."})
    reader = HostTierReader.open(worker.host_dir)
    try:
        wait_for(
            lambda: holds_version(reader, edited["updatedAt"]),
            "the main process to load the edited version",
        )
    finally:
        reader.close()
    after = worker.join(f"agent-{PRIYA}--after")
    assert after["updatedAt"] == edited["updatedAt"] != before["updatedAt"]
    assert after["promptHash"] != before["promptHash"]
    assert after["source"] == "host"


def test_with_convex_down_a_job_process_serves_the_held_prompt_flagged_stale(
    start_worker: Callable[..., Worker],
) -> None:
    try:
        convex = start_local_convex(seed=DEMO_SEED)
    except ServiceStartError as exc:
        unavailable(str(exc))
        raise
    try:
        worker = start_worker(convex, PROMPT_CACHE_TTL_SECONDS="1", CONVEX_TIMEOUT_SECONDS="0.5")
        held = worker.join(f"agent-{PRIYA}--held")
    finally:
        convex.stop()
    reader = HostTierReader.open(worker.host_dir)
    try:  # once nothing confirms the held version, it ages past the TTL
        wait_for(
            lambda: reader.lookup(PRIYA, None, trust_seconds=60, fresh_seconds=1) is None,
            "the held prompt to pass its TTL",
        )
    finally:
        reader.close()
    down = worker.join(f"agent-{PRIYA}--down")
    assert (down["source"], down["stale"]) == ("host", True)
    assert down["promptHash"] == held["promptHash"]


READER_SCRIPT = """
import sys, lmdb
env = lmdb.open(sys.argv[1], readonly=True, lock=True, max_readers=512)
txn = env.begin()
txn.get(b"hb")
print("reading", flush=True)
sys.stdin.read()
"""


def test_a_reader_killed_mid_read_leaves_the_tier_usable(
    convex: LocalConvex, start_worker: Callable[..., Worker]
) -> None:
    worker = start_worker(convex)
    worker.join(f"agent-{PRIYA}--first")
    reader = subprocess.Popen(
        [sys.executable, "-c", READER_SCRIPT, str(worker.host_dir)], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert reader.stdout is not None
    assert reader.stdout.readline() == b"reading\n"  # a read transaction is open
    os.kill(reader.pid, signal.SIGKILL)
    reader.wait()
    env = lmdb.open(str(worker.host_dir), readonly=True, lock=True, max_readers=512)
    try:
        # The main process's next heartbeat reclaims the dead process's reader slot.
        wait_for(lambda: f"{reader.pid} " not in env.readers(), "the dead reader's slot to be reclaimed")
    finally:
        env.close()
    edited = convex.call("mutation", "agents:update", {"agentId": PRIYA, "systemPrompt": "Edited after the kill."})
    watcher = HostTierReader.open(worker.host_dir)
    try:
        wait_for(
            lambda: holds_version(watcher, edited["updatedAt"]),
            "the main process to write the edited version",
        )
    finally:
        watcher.close()
    after = worker.join(f"agent-{PRIYA}--after")
    assert (after["source"], after["updatedAt"]) == ("host", edited["updatedAt"])
