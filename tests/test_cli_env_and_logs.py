"""``python -m agent``, run by its real command: ``.env.local`` loading and one log stream.

The worker is pointed at a LiveKit URL where nothing listens, so it starts, logs, and
retries; the test reads its output until livekit-agents' retry warning, then stops it.
Most runs use ``dev``, whose health server takes a free port; ``start`` binds 8081,
which another worker on the machine may hold, so that run stops at whichever comes
first, the retry warning or livekit's ``worker failed``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from devtools.processes import free_port
from tests.conftest import DEMO_SEED, REPO, project_free_env

# The last line the worker writes on its way up with no server: livekit's retry warning.
RETRY = "failed to connect to livekit"
FAILED = '"worker failed"'
COMMON_KEYS = {"event", "level", "logger", "timestamp"}


def run_worker(cwd: Path, env: dict[str, str], command: str = "dev") -> list[str]:
    """Start the worker in ``cwd``; return its output lines up to livekit's retry warning
    (or, for ``start``, up to ``worker failed`` if its health port is taken)."""
    stops = (RETRY, FAILED) if command == "start" else (RETRY,)
    process = subprocess.Popen(
        [sys.executable, "-m", "agent", command],
        cwd=cwd,
        env={**project_free_env(), "PYTHONPATH": str(REPO), "AGENTS_FILE": str(DEMO_SEED), **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines: list[str] = []
    done = threading.Event()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line.rstrip("\n"))
            if any(stop in line for stop in stops):
                done.set()
        done.set()

    threading.Thread(target=pump, daemon=True).start()
    try:
        if not done.wait(120):
            pytest.fail("the worker never tried to connect:\n" + "\n".join(lines[-40:]))
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(30)
    assert any(stop in line for line in lines for stop in stops), "\n".join(lines[-40:])
    return [line for line in lines if line.strip()]


def unreachable() -> dict[str, str]:
    return {
        "LIVEKIT_URL": f"ws://127.0.0.1:{free_port()}",
        "LIVEKIT_API_KEY": "devkey",
        "LIVEKIT_API_SECRET": "secret",
        "AGENT_MODEL_FACTORY": "devtools.fake_models:fake_session",
    }


def parsed(lines: list[str]) -> list[dict[str, object]]:
    records = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            pytest.fail(f"a line that is not JSON: {line!r}")
        assert isinstance(record, dict), line
        records.append(record)
    return records


def configured(records: list[dict[str, object]]) -> dict[str, object]:
    found = [record for record in records if record["event"] == "worker_configured"]
    assert len(found) == 1, records
    return found[0]


def test_a_setting_only_in_env_local_takes_effect_and_the_environment_overrides_it(tmp_path: Path) -> None:
    (tmp_path / ".env.local").write_text("AGENT_NAME=from-env-local\nLOG_FORMAT=json\n")
    (tmp_path / ".env").write_text("AGENT_NAME=from-dotenv\nAGENT_EXECUTOR=process\n")
    from_files = configured(parsed(run_worker(tmp_path, unreachable())))
    assert from_files["agentName"] == "from-env-local"  # .env.local wins over .env
    assert from_files["executor"] == "process"  # .env still fills what .env.local leaves out

    overridden = configured(parsed(run_worker(tmp_path, {**unreachable(), "AGENT_NAME": "from-environment"})))
    assert overridden["agentName"] == "from-environment"


def test_env_files_are_not_read_from_elsewhere_than_the_working_directory(tmp_path: Path) -> None:
    (tmp_path / ".env.local").write_text("AGENT_NAME=from-the-parent-directory\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    records = parsed(run_worker(elsewhere, {**unreachable(), "LOG_FORMAT": "json"}))
    assert configured(records)["agentName"] == ""


def test_livekit_records_and_project_events_share_one_json_stream_at_info(tmp_path: Path) -> None:
    records = parsed(run_worker(tmp_path, {**unreachable(), "LOG_FORMAT": "auto"}))  # not a TTY: JSON
    for record in records:
        assert set(record) >= COMMON_KEYS, record
    loggers = {str(record["logger"]) for record in records}
    assert "livekit.agents" in loggers  # livekit's own records, through structlog
    assert "agent.main" in loggers  # and the project's
    assert {record["event"] for record in records} >= {"starting worker", "worker_configured"}
    assert all(record["level"] != "debug" for record in records)  # dev defaults to DEBUG in livekit
    retry = next(record for record in records if RETRY in str(record["event"]))
    assert retry["level"] == "warning"
    assert "retry_count" in retry  # livekit's extra= fields survive


def test_start_renders_livekit_records_as_the_same_json(tmp_path: Path) -> None:
    records = parsed(run_worker(tmp_path, unreachable(), "start"))
    for record in records:
        assert set(record) >= COMMON_KEYS, record
    assert "livekit.agents" in {str(record["logger"]) for record in records}
    assert "starting worker" in {record["event"] for record in records}
    assert all(record["level"] != "debug" for record in records)


def test_log_level_warning_quiets_livekit_and_the_project_alike(tmp_path: Path) -> None:
    records = parsed(run_worker(tmp_path, {**unreachable(), "LOG_FORMAT": "json", "LOG_LEVEL": "warning"}))
    assert {record["level"] for record in records} <= {"warning", "error", "critical"}, records
    events = {str(record["event"]) for record in records}
    assert "starting worker" not in events  # livekit's INFO record
    assert "worker_configured" not in events  # the project's INFO event
    assert any(RETRY in event for event in events)


def test_log_level_debug_leaves_out_asyncios_debug_noise(tmp_path: Path) -> None:
    records = parsed(run_worker(tmp_path, {**unreachable(), "LOG_FORMAT": "json", "LOG_LEVEL": "debug"}))
    assert configured(records)["logLevel"] == "DEBUG"
    assert not [record for record in records if record["logger"] == "asyncio"]  # "Using selector: ..."
