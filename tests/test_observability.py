"""One structured event per resolution, with a hash and never the prompt; metrics count."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
import structlog
from prometheus_client import REGISTRY

from devtools.processes import LocalConvex
from services.logging import configure_logging
from services.store.file import local_backend_id
from tests.helpers import convex_service

PRIYA = local_backend_id(0)


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """A test may configure logging for itself: the root handlers, level and structlog's
    configuration are put back afterwards, so other tests keep theirs."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    saved = structlog.get_config()
    yield
    root.handlers, root.level = handlers, level
    structlog.configure(**saved)


async def test_each_resolution_logs_one_event_without_the_prompt(
    convex: LocalConvex, capsys: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    configure_logging(json_logs=True, level=logging.INFO)  # here: capsys's stream is live only in the test
    before = REGISTRY.get_sample_value("agent_prompt_resolutions_total", {"source": "ram", "stale": "false"}) or 0.0
    service = convex_service(convex)
    try:
        first = await service.get_full_prompt(PRIYA)
        await service.get_full_prompt(PRIYA)
    finally:
        await service.aclose()
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    events = [line for line in lines if line["event"] == "prompt_resolved"]
    assert [e["source"] for e in events] == ["db", "ram"]
    assert [e["cacheHit"] for e in events] == [False, True]
    for event in events:
        assert event["agentId"] == PRIYA
        assert set(event) >= {"latencyMs", "stale", "promptHash", "updatedAt"}
    everything = "\n".join(json.dumps(line) for line in lines)
    assert first.prompt not in everything
    assert first.prompt[:80] not in everything
    assert convex.deploy_key not in everything
    after = REGISTRY.get_sample_value("agent_prompt_resolutions_total", {"source": "ram", "stale": "false"})
    assert after == before + 1
