"""Random agents give the same prompt (or the same refusal) in Python and TypeScript."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prompts import PromptBuildError, build_full_prompt, load_templates
from tests.conftest import REPO, unavailable

TEMPLATES = load_templates()
DOMAINS = [*TEMPLATES["domains"], "martian", "constructor", "toString"]
LANGUAGES = [f"{code}-XX" for code in TEMPLATES["languages"]] + ["EN-us", "", "-", "zz", "pt"]

text = st.text(max_size=200)
agents = st.fixed_dictionaries(
    {
        "name": text,
        "systemPrompt": st.one_of(text, st.text(alphabet="{}$&'`\\n ab", max_size=60)),
        "config": st.fixed_dictionaries(
            {
                "domain": st.one_of(st.sampled_from(DOMAINS), text),
                "language": st.one_of(st.sampled_from(LANGUAGES), text),
            },
            optional={"greeting": st.one_of(st.none(), text, st.integers()), "voice": text},
        ),
    },
    optional={"fullPrompt": text},
)


class TypeScriptBuilder:
    def __init__(self) -> None:
        self._process = subprocess.Popen(
            ["npx", "--prefix", "convex", "tsx", "convex/scripts/build-prompts.ts"],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            encoding="utf-8",
        )

    def build(self, agent: dict[str, Any]) -> dict[str, str]:
        assert self._process.stdin is not None and self._process.stdout is not None
        self._process.stdin.write(json.dumps(agent) + "\n")
        self._process.stdin.flush()
        line = self._process.stdout.readline()
        if not line:
            raise RuntimeError("the TypeScript builder exited")
        answer: dict[str, str] = json.loads(line)
        return answer

    def close(self) -> None:
        if self._process.stdin is not None:
            self._process.stdin.close()
        self._process.wait(10)


@pytest.fixture(scope="module")
def ts_builder() -> Iterator[TypeScriptBuilder]:
    if not (REPO / "convex" / "node_modules" / ".bin" / "tsx").exists():
        unavailable("convex/node_modules is not installed (make node-deps)")
    builder = TypeScriptBuilder()
    yield builder
    builder.close()


def python_answer(agent: dict[str, Any]) -> dict[str, str]:
    try:
        return {"prompt": build_full_prompt(agent)}
    except PromptBuildError:
        return {"error": "PromptBuildError"}


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(agent=agents)
def test_random_agents_build_identically_in_both_languages(
    ts_builder: TypeScriptBuilder, agent: dict[str, Any]
) -> None:
    assert ts_builder.build(agent) == python_answer(agent)
