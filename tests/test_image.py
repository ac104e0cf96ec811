"""The container image (``Dockerfile``), built with buildah on a base made locally by
debootstrap plus Debian's Python 3.11 (``devtools/image.py``), and run for real: it exits
2 naming what is missing, serves a call dispatched through a real ``livekit-server
--dev`` as a non-root user with its JSON logs on stdout, answers its own HEALTHCHECK,
drains a running call on SIGTERM and exits 0, and keeps nothing of the build's CA mount.

The worker in the container uses the fake models seam: the repo's ``devtools/`` is
mounted read-only for these tests alone (the image holds only the wheel)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator

import pytest
from livekit import api

from agent.admission.targeting import room_name_for
from agent.dispatch import dispatch_agent
from devtools.image import (
    CA_IN_BUILD,
    HOST_CA,
    IMAGE_TAG,
    Buildah,
    ImageError,
    build_image,
    container_process,
    context_bytes,
    ensure_base,
    image_config,
    image_size,
    layer_entries,
    missing_tools,
    new_container,
    process_uid,
    remove_container,
    run_argv,
)
from devtools.processes import DEMO_SEED, REPO, LiveKitServer, free_port
from services.store.file import local_backend_id
from tests.conftest import unavailable
from tests.e2e_support import Worker, job_of, our_agents, server_api

# A cold run debootstraps the base and builds the image in the first test's setup
# (about 4 minutes here): past the suite's 300 s default when the machine is loaded.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]
AGENT_NAME = "image-agent"
PRIYA = local_backend_id(0)
IMAGE_USER = "10001:10001"


@pytest.fixture(scope="module")
def buildah() -> Iterator[Buildah]:
    """The image, built (or found up to date) once for the module."""
    reason = missing_tools()
    if reason:
        unavailable(reason)
    builder = Buildah()
    try:  # can buildah work here at all? A broken Dockerfile is a failure, not this.
        remove_container(builder, builder("from", "scratch").strip())
    except (ImageError, OSError, subprocess.TimeoutExpired) as exc:
        unavailable(f"buildah cannot create a container here: {exc}")
    ensure_base(builder)
    build_image(builder)
    yield builder


@pytest.fixture(scope="module")
def container(buildah: Buildah) -> Iterator[str]:
    """One working container of the image for the module's runs (vfs copies the whole
    root filesystem for each)."""
    name = new_container(buildah)
    yield name
    remove_container(buildah, name)


def worker_env(livekit: LiveKitServer) -> dict[str, str]:
    return {
        "LIVEKIT_URL": livekit.url,
        "LIVEKIT_API_KEY": livekit.api_key,
        "LIVEKIT_API_SECRET": livekit.api_secret,
        "AGENT_NAME": AGENT_NAME,
        "AGENTS_FILE": "/opt/seed/demo-agents.json",
        "AGENT_MODEL_FACTORY": "devtools.fake_models:fake_session",
        "PYTHONPATH": "/opt/dev",
        # Host network: ports of their own, so runs side by side never collide.
        "AGENT_HTTP_PORT": str(free_port()),
        "PROMETHEUS_PORT": str(free_port()),
    }


TEST_VOLUMES = {REPO / "devtools": "/opt/dev/devtools", DEMO_SEED: "/opt/seed/demo-agents.json"}


def image_command(buildah: Buildah) -> list[str]:
    return list(image_config(buildah)["Cmd"])


def start_container_worker(buildah: Buildah, container: str, env: dict[str, str]) -> Worker:
    """The image's CMD in the container; returns once it registered. Its output is read
    as one stream: with stderr on a pipe of its own, ``buildah run`` relayed the
    worker's stdout only when it ended."""
    argv = run_argv(buildah, container, image_command(buildah), env=env, volumes=TEST_VOLUMES)
    process = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )  # fmt: skip
    worker = Worker(process, "thread")

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            with worker.changed:
                worker.lines.append(line.rstrip())
                worker.changed.notify_all()
        with worker.changed:
            worker.changed.notify_all()

    threading.Thread(target=pump, daemon=True).start()
    if not worker.wait_for(lambda: bool(worker.events("registered worker")), 120):
        worker.stop()
        raise AssertionError("the container never registered:\n" + worker.tail())
    return worker


def the_workers_pid(worker: Worker) -> int:
    pid = None
    deadline = time.monotonic() + 30
    while pid is None and time.monotonic() < deadline and worker.process.poll() is None:
        pid = container_process(worker.process.pid)
        if pid is None:
            time.sleep(0.05)  # poll interval: /proc has no event for a new process
    assert pid is not None, "no process found under buildah run"
    return pid


def test_the_image_is_configured_as_documented_and_its_size_is_printed(
    buildah: Buildah, capsys: pytest.CaptureFixture[str]
) -> None:
    config = image_config(buildah)
    assert config["User"] == IMAGE_USER
    assert config["Cmd"] == ["python", "-m", "agent", "start"]
    assert {"8081/tcp", "9464/tcp"} <= set(config["ExposedPorts"])
    assert config["Healthcheck"]["Test"][:2] == ["CMD", "python"]  # no curl in the image
    with capsys.disabled():
        print(f"\n{IMAGE_TAG}: {image_size(buildah)}; build context {context_bytes() / 1024:.0f} KiB")


def test_nothing_of_the_build_ca_mount_is_in_the_image(buildah: Buildah) -> None:
    bundle = HOST_CA.read_bytes()
    entries = layer_entries(buildah, hash_size=len(bundle))
    assert entries, "no layer entries read"
    mount_point = CA_IN_BUILD.lstrip("/")
    assert [e.path for e in entries if e.path.lstrip("./") == mount_point] == []
    assert [e.path for e in entries if e.sha256 == hashlib.sha256(bundle).hexdigest()] == []
    assert [v for v in image_config(buildah)["Env"] if "PIP_CERT" in v or CA_IN_BUILD in v] == []


def test_without_livekit_url_the_container_exits_2_naming_the_missing_variables(
    buildah: Buildah, container: str
) -> None:
    argv = run_argv(buildah, container, image_command(buildah))
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "LIVEKIT_URL" in done.stderr
    assert done.stdout == ""  # the one line goes to stderr


async def test_a_dispatched_call_gets_its_agent_from_the_container_run_as_non_root(
    buildah: Buildah, container: str, livekit: LiveKitServer, capsys: pytest.CaptureFixture[str]
) -> None:
    env = worker_env(livekit)
    started = time.monotonic()
    worker = await asyncio.to_thread(start_container_worker, buildah, container, env)
    registered = time.monotonic() - started
    try:
        assert process_uid(the_workers_pid(worker)) == int(IMAGE_USER.split(":", maxsplit=1)[0])
        async with server_api(livekit) as lk:
            first = await dispatch_agent(lk, room_name_for(PRIYA, "image-1"), PRIYA, agent_name=AGENT_NAME)
            second = await dispatch_agent(lk, room_name_for(PRIYA, "image-2"), PRIYA, agent_name=AGENT_NAME)
            for call in (first, second):

                def answered(call_job: str = job_of(call)) -> bool:
                    return any(e["jobId"] == call_job for e in worker.events("job_started"))

                assert await asyncio.to_thread(worker.wait_for, answered, 30), worker.tail()
                await lk.room.delete_room(api.DeleteRoomRequest(room=call.room))
        # The image's own HEALTHCHECK command, run beside the worker (same network).
        check = run_argv(buildah, container, image_config(buildah)["Healthcheck"]["Test"][1:], env=env)
        health = await asyncio.to_thread(subprocess.run, check, capture_output=True, text=True, timeout=120)
        assert health.returncode == 0, health.stderr
        # The worker's whole log is JSON lines (livekit-agents' records included).
        assert all(isinstance(json.loads(line), dict) for line in worker.lines), worker.tail()
        with capsys.disabled():
            print(
                f"\nfresh container: registered {registered:.1f} s after `buildah run`; first call "
                f"{first.seconds:.2f} s, second call {second.seconds:.2f} s (dispatch to agent ready)"
            )
    finally:
        worker.stop()


async def test_sigterm_during_a_call_lets_the_call_finish_then_exits_0(
    buildah: Buildah, container: str, livekit: LiveKitServer
) -> None:
    worker = await asyncio.to_thread(start_container_worker, buildah, container, worker_env(livekit))
    try:
        room = room_name_for(PRIYA, "image-drain")
        async with server_api(livekit) as lk:
            call = await dispatch_agent(lk, room, PRIYA, agent_name=AGENT_NAME)
            os.kill(the_workers_pid(worker), signal.SIGTERM)  # what `docker stop` sends

            def draining() -> bool:
                return any("draining worker" in line for line in worker.lines)

            assert await asyncio.to_thread(worker.wait_for, draining, 30), worker.tail()
            # Draining, the worker keeps the call: still running, its agent still in the room.
            assert [a.identity for a in await our_agents(lk, room)] == [call.agent_identity]
            assert worker.process.poll() is None, worker.tail()
            await lk.room.delete_room(api.DeleteRoomRequest(room=room))  # the caller hangs up
        exit_code = await asyncio.to_thread(worker.process.wait, 120)
        assert exit_code == 0, worker.tail()
        # The call ended (the hang-up) while the worker drained, and the drain then ended.
        drained_at = next(i for i, line in enumerate(worker.lines) if "draining worker" in line)
        ended = [i for i, e in enumerate(worker.lines) if '"event": "job_ended"' in e and call.room in e]
        assert ended and ended[0] > drained_at, worker.tail()
        assert not [line for line in worker.lines if "drain timed out" in line or "exiting forcefully" in line]
    finally:
        worker.stop()
