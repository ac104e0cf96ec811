"""The worker refuses to start, with status 2 and one clear line, on bad settings."""

from __future__ import annotations

import subprocess
import sys

import pytest
from structlog.testing import capture_logs

from agent.settings import DEFAULT_MODEL_FACTORY, WorkerSettings, warn_renamed_settings
from services import SettingsError
from tests.conftest import REPO, project_free_env

BASE = {"LIVEKIT_URL": "ws://127.0.0.1:7880", "LIVEKIT_API_KEY": "devkey", "LIVEKIT_API_SECRET": "secret"}


def run_worker(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = project_free_env()
    return subprocess.run(
        [sys.executable, "-m", "agent", "start"],
        cwd=REPO,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_missing_livekit_url_exits_non_zero_naming_it() -> None:
    result = run_worker({"LIVEKIT_API_KEY": "k", "LIVEKIT_API_SECRET": "s"})
    assert result.returncode == 2
    assert "LIVEKIT_URL" in result.stderr


def test_missing_openai_key_with_the_openai_models_exits_non_zero() -> None:
    result = run_worker(BASE)
    assert result.returncode == 2
    assert "OPENAI_API_KEY" in result.stderr


def test_a_room_pattern_without_the_agent_id_group_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in BASE.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("ROOM_NAME_PATTERN", r"room-(\w+)")
    with pytest.raises(SettingsError, match="agent_id"):
        WorkerSettings.from_env()
    monkeypatch.setenv("ROOM_NAME_PATTERN", r"room-(?P<agent_id>\w+)")
    monkeypatch.setenv("AGENT_EXECUTOR", "fork")
    with pytest.raises(SettingsError, match="AGENT_EXECUTOR"):
        WorkerSettings.from_env()


def test_the_secret_never_shows_in_the_settings_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in BASE.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-very-secret")
    monkeypatch.setenv("LIVEKIT_API_SECRET", "lk-very-secret")
    text = repr(WorkerSettings.from_env())
    assert "sk-very-secret" not in text
    assert "lk-very-secret" not in text


def test_env_example_documents_exactly_the_variables_the_settings_read() -> None:
    from services import ServiceSettings

    documented = {
        line.split("=", 1)[0]
        for line in (REPO / ".env.example").read_text().splitlines()
        if line and not line.startswith("#")
    }
    read = {
        str(field.alias)
        for model in (WorkerSettings, ServiceSettings)
        for field in model.model_fields.values()
        if field.alias
    }
    assert documented == read


def test_the_model_factory_s_old_path_is_read_as_its_new_one_and_named_at_the_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Env files written before the sessions moved name ``agent.models:openai_session``."""
    for key, value in BASE.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("AGENT_MODEL_FACTORY", "agent.models:openai_session")
    assert WorkerSettings.from_env().model_factory == DEFAULT_MODEL_FACTORY == "agent.sessions.openai:openai_session"
    with capture_logs() as logs:
        warn_renamed_settings({"AGENT_MODEL_FACTORY": "agent.models:openai_session"})
        warn_renamed_settings({"AGENT_MODEL_FACTORY": DEFAULT_MODEL_FACTORY})
    assert [(e["event"], e["setting"], e["old"], e["new"]) for e in logs] == [
        ("setting_renamed", "AGENT_MODEL_FACTORY", "agent.models:openai_session", DEFAULT_MODEL_FACTORY)
    ]


def test_neither_convex_nor_an_agents_file_exits_non_zero_naming_agents_file() -> None:
    result = run_worker({**BASE, "OPENAI_API_KEY": "sk-test"})
    assert result.returncode == 2
    assert "AGENTS_FILE" in result.stderr and "Traceback" not in result.stderr
