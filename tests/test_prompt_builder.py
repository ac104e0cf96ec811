"""The Python builder against the shared vectors and its own guarantees."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from prompts import PromptBuildError, build_full_prompt, load_templates, template_version
from prompts.make_vectors import make_vectors, templates_sha256

VECTORS = json.loads((Path(__file__).parent.parent / "prompts" / "test_vectors.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("vector", VECTORS["vectors"], ids=lambda v: v["name"])
def test_builder_matches_shared_vector(vector: dict[str, Any]) -> None:
    if "error" in vector:
        with pytest.raises(PromptBuildError):
            build_full_prompt(vector["agent"])
    else:
        assert build_full_prompt(vector["agent"]) == vector["expected"]


def test_vectors_were_generated_from_the_current_templates() -> None:
    # Fails when templates.json changes without `make vectors` (which insists on a version bump).
    assert VECTORS["templatesSha256"] == templates_sha256()
    assert VECTORS["templateVersion"] == template_version()
    assert make_vectors() == VECTORS


def test_every_template_placeholder_is_one_the_builder_fills() -> None:
    templates = load_templates()
    texts = [*templates["sections"].values(), *(d["template"] for d in templates["domains"].values())]
    used = {name for text in texts for name in __import__("re").findall(r"\{\{([A-Za-z]+)\}\}", text)}
    assert used <= set(templates["placeholders"])
    assert len(templates["domains"]) >= 3


def test_user_text_with_template_syntax_is_inserted_literally() -> None:
    agent = {
        "name": "{{greeting}}",
        "systemPrompt": "{{name}} {{unknownThing}}",
        "config": {"domain": "general", "language": "en", "greeting": "{{systemPrompt}}"},
    }
    prompt = build_full_prompt(agent)
    assert "You are {{greeting}}," in prompt
    assert "{{name}} {{unknownThing}}" in prompt
    assert "greet the caller with: {{systemPrompt}}" in prompt


def test_building_is_deterministic_and_ignores_extra_fields() -> None:
    agent = VECTORS["vectors"][0]["agent"]
    assert build_full_prompt(agent) == build_full_prompt({**agent, "fullPrompt": "x", "updatedAt": 3})
