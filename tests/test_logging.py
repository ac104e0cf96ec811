"""The project's events and the standard library's records share one stream and format,
and the fast path for events keeps structlog's behaviour."""

from __future__ import annotations

import io
import json
import logging
import re
from typing import Any

import pytest
import structlog

from services.logging import configure_logging

STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


def lines(capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.strip()]


def test_events_and_stdlib_records_come_out_as_json_with_the_same_keys(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(json_logs=True, level=logging.INFO)
    structlog.get_logger("tests.events").info("prompt_resolved", agentId="a1", latencyMs=0.01, cacheHit=True)
    logging.getLogger("livekit.agents").info("registered worker", extra={"id": "AW_1"})
    event, record = lines(capsys)
    assert event == {
        "agentId": "a1",
        "latencyMs": 0.01,
        "cacheHit": True,
        "event": "prompt_resolved",
        "level": "info",
        "logger": "tests.events",
        "timestamp": event["timestamp"],
    }
    assert record["event"] == "registered worker"
    assert record["id"] == "AW_1"
    common = {"event", "level", "logger", "timestamp"}
    assert common <= set(event)
    assert common <= set(record)
    assert STAMP.match(event["timestamp"])
    assert STAMP.match(record["timestamp"])


def test_a_logger_used_before_reconfiguration_follows_the_new_level_and_stream(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging(json_logs=True, level=logging.INFO)
    log = structlog.get_logger("tests.cached")
    log.info("first")  # cached from here on
    buffer = io.StringIO()
    configure_logging(json_logs=True, level=logging.WARNING)
    logging.getLogger().handlers[0].stream = buffer  # type: ignore[attr-defined]
    log.info("quiet")
    log.warning("loud", n=1)
    written = [json.loads(line) for line in buffer.getvalue().splitlines()]
    assert [line["event"] for line in written] == ["loud"]
    assert written[0]["level"] == "warning"
    assert [line["event"] for line in lines(capsys)] == ["first"]


def test_exceptions_and_values_json_cannot_hold_are_rendered(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(json_logs=True, level=logging.INFO)
    log = structlog.get_logger("tests.errors")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.exception("job_failed", reason="session_error")
    log.info("odd_value", value={1, 2}.__class__)
    failed, odd = lines(capsys)
    assert failed["level"] == "error"
    assert "RuntimeError: boom" in failed["exception"]
    assert odd["value"] == repr(set)


def test_a_bound_logger_carries_its_fields(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(json_logs=True, level=logging.INFO)
    structlog.get_logger("tests.bound").bind(room="r1", jobId="j1").info("job_started", promptSource="ram")
    (line,) = lines(capsys)
    assert (line["room"], line["jobId"], line["promptSource"]) == ("r1", "j1", "ram")


def test_a_closed_stream_never_raises_into_the_caller() -> None:
    configure_logging(json_logs=True, level=logging.INFO)
    closed = io.StringIO()
    closed.close()
    logging.getLogger().handlers[0].stream = closed  # type: ignore[attr-defined]
    structlog.get_logger("tests.closed").info("prompt_resolved", agentId="a1")  # no exception
