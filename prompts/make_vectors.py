"""Regenerate ``test_vectors.json`` from the Python builder: ``python -m prompts.make_vectors``.

The TypeScript builder is then checked against the same file by vitest. The file
records a hash of ``templates.json``: changing the templates without bumping their
``version`` is refused, because stored prompts would then look current while they
are not (the migration detects outdated prompts by that version).
"""

from __future__ import annotations

import hashlib
import json
import sys
from importlib import resources
from typing import Any

from prompts.builder import PromptBuildError, build_full_prompt, template_version

BASE: dict[str, Any] = {
    "name": "Priya",
    "systemPrompt": "Book appointments for Smile Bright Dental.",
    "config": {"domain": "dental", "language": "en-US", "voice": "alloy", "model": "gpt-4o-mini"},
}


def _agent(**changes: Any) -> dict[str, Any]:
    config = {**BASE["config"], **changes.pop("config", {})}
    return {**BASE, **changes, "config": config}


CASES: list[tuple[str, dict[str, Any]]] = [
    ("dental with greeting", _agent(config={"greeting": "Smile Bright, Priya speaking."})),
    ("restaurant in Italian", _agent(name="Marco", config={"domain": "restaurant", "language": "it-IT"})),
    ("real estate, no greeting", _agent(config={"domain": "real_estate", "language": "es"})),
    ("general domain", _agent(config={"domain": "general", "language": "en-GB"})),
    ("empty greeting is left out", _agent(config={"greeting": ""})),
    ("null greeting is left out", _agent(config={"greeting": None})),
    (
        "template syntax in user text stays literal",
        _agent(
            name="{{systemPrompt}}",
            systemPrompt="Say {{name}} and {{greeting}} verbatim; $& $1 $$ are not patterns.",
            config={"greeting": "{{languageName}}"},
        ),
    ),
    (
        "unicode text",
        _agent(name="Zoë 🦷", systemPrompt="مرحبا — ça va? 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 e\u0301", config={"language": "fr-CA"}),
    ),
    ("upper-case language tag", _agent(config={"language": "EN-us"})),
    ("unknown language keeps the tag", _agent(config={"language": "tlh-KL"})),
    ("empty language tag", _agent(config={"language": ""})),
    ("empty system prompt", _agent(systemPrompt="")),
    ("extra fields are ignored", {**_agent(), "fullPrompt": "old", "updatedAt": 1.5, "_id": "x"}),
    ("unknown domain", _agent(config={"domain": "martian"})),
    ("inherited object key is no domain", _agent(config={"domain": "constructor"})),
    ("proto is no domain", _agent(config={"domain": "__proto__"})),
    ("missing name", {k: v for k, v in _agent().items() if k != "name"}),
    ("config is not an object", {**_agent(), "config": ["dental"]}),
    ("greeting is not a string", _agent(config={"greeting": 7})),
    ("null system prompt", _agent(systemPrompt=None)),
]


def templates_sha256() -> str:
    data = resources.files("prompts").joinpath("templates.json").read_bytes()
    return hashlib.sha256(data).hexdigest()


def make_vectors() -> dict[str, Any]:
    vectors = []
    for name, agent in CASES:
        try:
            vectors.append({"name": name, "agent": agent, "expected": build_full_prompt(agent)})
        except PromptBuildError:
            vectors.append({"name": name, "agent": agent, "error": "PromptBuildError"})
    return {"templateVersion": template_version(), "templatesSha256": templates_sha256(), "vectors": vectors}


def main() -> int:
    path = resources.files("prompts").joinpath("test_vectors.json")
    try:
        previous = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        previous = None
    fresh = make_vectors()
    if (
        previous is not None
        and previous["templatesSha256"] != fresh["templatesSha256"]
        and previous["templateVersion"] == fresh["templateVersion"]
    ):
        print('templates.json changed: bump its "version" first', file=sys.stderr)
        return 1
    with open(str(path), "w", encoding="utf-8") as out:
        json.dump(fresh, out, indent=2, ensure_ascii=False)
        out.write("\n")
    print(f"wrote {len(fresh['vectors'])} vectors for template version {fresh['templateVersion']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
