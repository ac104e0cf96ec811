"""The one prompt builder, mirrored line for line by ``convex/lib/promptBuilder.ts``.

Convex builds ``fullPrompt`` in its mutations; the worker builds it only for legacy
agents that lack one. Both must produce the same bytes, so the algorithm is kept
deliberately small (no trimming, no case folding beyond ASCII, no number formatting)
and both sides are checked against ``test_vectors.json``:

1. ``domain = config.domain`` must name a domain in ``templates.json``.
2. ``languageName`` is the ``languages`` entry for the ASCII-lowercased primary
   subtag of ``config.language`` (the text before the first ``-``), else the tag.
3. Sections ``header``, the domain's template, ``instructions``, ``voice`` and, when
   ``config.greeting`` is a non-empty string, ``greeting`` are rendered and joined
   with a blank line.

Rendering replaces ``{{placeholder}}`` in the *template* in a single pass; values are
inserted literally, so user text that looks like template syntax stays as typed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from functools import cache
from importlib import resources
from typing import Any

_PLACEHOLDER = re.compile(r"\{\{([A-Za-z]+)\}\}")
_ASCII_UPPER = re.compile(r"[A-Z]")


class PromptBuildError(ValueError):
    """The agent document cannot be turned into a prompt (missing field, unknown domain)."""


@cache
def load_templates() -> Mapping[str, Any]:
    """Templates are data shipped beside this module; read once per process."""
    text = resources.files("prompts").joinpath("templates.json").read_text(encoding="utf-8")
    templates: dict[str, Any] = json.loads(text)
    return templates


def template_version() -> int:
    """The version stamped on every prompt built from the current templates."""
    return int(load_templates()["version"])


def _require_str(value: object, field: str) -> str:
    if not isinstance(value, str):
        raise PromptBuildError(f"agent field {field!r} must be a string, got {type(value).__name__}")
    return value


def _ascii_lower(text: str) -> str:
    return _ASCII_UPPER.sub(lambda m: m.group(0).lower(), text)


def _render(template: str, values: Mapping[str, str]) -> str:
    def substitute(match: re.Match[str]) -> str:
        key = match.group(1)
        if key not in values:
            raise PromptBuildError(f"template uses unknown placeholder {{{{{key}}}}}")
        return values[key]

    return _PLACEHOLDER.sub(substitute, template)


def build_full_prompt(agent: Mapping[str, Any]) -> str:
    """Build the system prompt for an agent document as stored (camelCase keys)."""
    templates = load_templates()
    name = _require_str(agent.get("name"), "name")
    system_prompt = _require_str(agent.get("systemPrompt"), "systemPrompt")
    config = agent.get("config")
    if not isinstance(config, Mapping):
        raise PromptBuildError("agent field 'config' must be an object")
    domain_key = _require_str(config.get("domain"), "config.domain")
    domains: Mapping[str, Any] = templates["domains"]
    if domain_key not in domains:
        raise PromptBuildError(f"unknown domain {domain_key!r}")
    domain = domains[domain_key]
    language_tag = _require_str(config.get("language"), "config.language")
    primary = _ascii_lower(language_tag.split("-", 1)[0])
    languages: Mapping[str, str] = templates["languages"]
    language_name = languages.get(primary, language_tag)
    greeting = config.get("greeting")
    if greeting is not None:
        greeting = _require_str(greeting, "config.greeting")

    values = {
        "name": name,
        "domainLabel": domain["label"],
        "languageName": language_name,
        "languageTag": language_tag,
        "systemPrompt": system_prompt,
        "greeting": greeting or "",
    }
    sections: Mapping[str, str] = templates["sections"]
    parts = [
        _render(sections["header"], values),
        _render(domain["template"], values),
        _render(sections["instructions"], values),
        _render(sections["voice"], values),
    ]
    if greeting:
        parts.append(_render(sections["greeting"], values))
    return "\n\n".join(parts)
