"""Fixtures that start the real local services. Under ``CI=true`` a service that cannot
start fails the tests that need it; elsewhere those tests are skipped with the reason."""

from __future__ import annotations

import fnmatch
import json
import os
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from devtools.processes import (
    DEMO_SEED,
    REPO,
    LiveKitServer,
    LocalConvex,
    OpenAIStandin,
    RedisServer,
    ServiceStartError,
    start_livekit,
    start_local_convex,
    start_openai_standin,
    start_redis,
)

__all__ = ["DEMO_SEED", "REPO"]
IN_CI = os.environ.get("CI") == "true"


def unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"required service unavailable under CI=true: {reason}")
    pytest.skip(reason)


def project_free_env() -> dict[str, str]:
    """This environment without any of the project's own settings, for child processes
    whose settings a test spells out."""
    prefixes = ("LIVEKIT_", "CONVEX_", "PROMPT_", "AGENT", "OPENAI_", "PROBE_")
    return {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}


def demo_agents() -> list[dict[str, Any]]:
    return list(json.loads(DEMO_SEED.read_text(encoding="utf-8"))["agents"])


@pytest.fixture(scope="session")
def convex_server() -> Iterator[LocalConvex]:
    try:
        server = start_local_convex(seed=DEMO_SEED)
    except ServiceStartError as exc:
        unavailable(str(exc))
        raise
    yield server
    server.stop()


@pytest.fixture
def convex(convex_server: LocalConvex) -> LocalConvex:
    """The session's local backend, restored to the demo seed with zeroed counters."""
    convex_server.reset(data=True)
    return convex_server


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    try:
        server = start_redis()
    except ServiceStartError as exc:
        unavailable(str(exc))
        raise
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    redis_server.flush()
    return redis_server.url


@pytest.fixture(scope="module")
def livekit() -> Iterator[LiveKitServer]:
    """A real ``livekit-server --dev`` on free loopback ports, one per test module."""
    try:
        server = start_livekit()
    except ServiceStartError as exc:
        unavailable(str(exc))
        raise
    yield server
    server.stop()


@pytest.fixture
def hanging_port() -> Iterator[int]:
    """A TCP server that accepts connections and never answers (a hung Convex or Redis)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield int(listener.getsockname()[1])
    stop.set()
    thread.join(2)
    for conn in held:
        conn.close()
    listener.close()


@pytest.fixture(scope="session")
def openai_standin_server() -> Iterator[OpenAIStandin]:
    """The OpenAI stand-in with zero model delays (answers at once), one per test session."""
    try:
        server = start_openai_standin(stt_delay_ms=0, llm_ttft_ms=0, tts_ttfb_ms=0)
    except ServiceStartError as exc:
        unavailable(str(exc))
        raise
    yield server
    server.stop()


@pytest.fixture
def openai_standin(openai_standin_server: OpenAIStandin) -> OpenAIStandin:
    """The session's stand-in with its stats zeroed for this test."""
    openai_standin_server.reset()
    return openai_standin_server


E2E_FILES = ("test_e2e_*", "test_image.py", "test_talk_browser.py", "test_devstack.py")
"""Modules marked ``e2e`` as a whole: real livekit-server calls, a browser, an image, the
dev stack (``make test-fast`` leaves them out; ``make test`` runs them)."""
SLOW_FILES = ("test_worker_host_tier.py", "test_worker_executors.py")
"""Modules marked ``slow`` as a whole (real workers under both executors); single slow tests
carry ``@pytest.mark.slow`` themselves. ``--durations`` in ``make pytest`` shows what to add."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark by file, so a new e2e module is left out of ``make test-fast`` by its name."""
    for item in items:
        name = item.path.name
        if any(fnmatch.fnmatch(name, pattern) for pattern in E2E_FILES):
            item.add_marker(pytest.mark.e2e)
        if name in SLOW_FILES:
            item.add_marker(pytest.mark.slow)
