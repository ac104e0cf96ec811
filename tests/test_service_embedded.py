"""With CONVEX_URL unset the worker runs on the embedded agents file, same semantics."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from prompts import build_full_prompt
from services import AgentConfigService, AgentNotFoundError, SettingsError
from services.store.file import local_backend_id
from tests.conftest import DEMO_SEED
from tests.helpers import poll_versions


async def test_from_env_without_convex_serves_the_demo_agents(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "agents.json"
    shutil.copy(DEMO_SEED, path)
    monkeypatch.delenv("CONVEX_URL", raising=False)
    monkeypatch.setenv("AGENTS_FILE", str(path))
    monkeypatch.setenv("PROMPT_REFRESH_SECONDS", "3600")
    service = AgentConfigService.from_env()
    try:
        first = await service.get_full_prompt(local_backend_id(0))
        legacy = await service.get_full_prompt(local_backend_id(3))
        with pytest.raises(AgentNotFoundError):
            await service.get_full_prompt("00000000000000000000099999agents")
        data = json.loads(path.read_text())
        data["agents"][0]["systemPrompt"] = "Edited in the file."
        data["agents"][0]["updatedAt"] = 1_900_000_000_000
        data["agents"][0].pop("fullPrompt")
        path.write_text(json.dumps(data))
        os.utime(path, (1, 2))
        await poll_versions(service)
        edited = await service.get_full_prompt(local_backend_id(0))
    finally:
        await service.aclose()
    assert first.source == "db"
    assert legacy.source == "build"
    assert legacy.prompt == build_full_prompt(json.loads(DEMO_SEED.read_text())["agents"][3])
    assert "Edited in the file." in edited.prompt
    assert edited.updated_at == 1_900_000_000_000


def test_convex_url_without_a_deploy_key_is_a_clear_settings_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVEX_URL", "http://127.0.0.1:1")
    monkeypatch.delenv("CONVEX_DEPLOY_KEY", raising=False)
    with pytest.raises(SettingsError, match="CONVEX_DEPLOY_KEY"):
        AgentConfigService.from_env()


def test_a_nonsense_number_setting_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMPT_CACHE_MAX_ENTRIES", "zero")
    with pytest.raises(SettingsError, match="PROMPT_CACHE_MAX_ENTRIES"):
        AgentConfigService.from_env()


def test_without_convex_the_agents_file_is_required_and_named(monkeypatch: pytest.MonkeyPatch) -> None:
    """The wheel ships no agents file, so there is no default to fall back on."""
    monkeypatch.delenv("CONVEX_URL", raising=False)
    monkeypatch.delenv("AGENTS_FILE", raising=False)
    with pytest.raises(SettingsError, match="AGENTS_FILE"):
        AgentConfigService.from_env()
