"""The OpenAI pipeline sends a ``prompt_cache_key`` per agent version and a system prompt
that is the same first message on every call, and reports the tokens the cache saved.

A recording httpx transport stands in for OpenAI (no network): the real
``livekit-plugins-openai`` LLM and a real ``AgentSession`` build the requests.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any

import httpx2 as httpx  # what the openai SDK (3.x) and the livekit plugin speak
import pytest
from livekit.agents import Agent, SessionUsageUpdatedEvent
from livekit.agents.metrics import LLMModelUsage
from openai import AsyncOpenAI
from prometheus_client import REGISTRY

from agent.sessions.openai import openai_session
from agent.sessions.provider_cache import CachedTokens, prompt_cache_key
from services.records import AgentConfig, PromptResult

AGENT_ID = "00000000000000000000010000agents"
CACHED = 1024
GREETING = "Hello, thanks for calling."


def chunk(body: Mapping[str, Any]) -> str:
    return "data: " + json.dumps({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, **body}) + "\n\n"


class RecordingOpenAI(httpx.AsyncBaseTransport):
    """Answers every chat completion with a short streamed reply and records the request."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        assert request.url.path.endswith("/chat/completions"), request.url
        self.requests.append(json.loads(await request.aread()))
        model = {"model": "gpt-4o-mini"}
        stream = (
            chunk({**model, "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hi!"}}]})
            + chunk({**model, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
            + chunk(
                {
                    **model,
                    "choices": [],
                    "usage": {
                        "prompt_tokens": 1300,
                        "completion_tokens": 2,
                        "total_tokens": 1302,
                        "prompt_tokens_details": {"cached_tokens": CACHED},
                    },
                }
            )
            + "data: [DONE]\n\n"
        )
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=stream.encode())


def result_for(updated_at: float, prompt: str) -> PromptResult:
    config = {"domain": "dental", "language": "en", "voice": "alloy", "model": "gpt-4o-mini", "greeting": GREETING}
    agent = AgentConfig(AGENT_ID, "org", "Dana", config, updated_at)
    return PromptResult(prompt=prompt, source="ram", updated_at=updated_at, stale=False, agent=agent)


async def one_call(result: PromptResult, transport: RecordingOpenAI) -> CachedTokens:
    """What a job does with its session: start it with the prompt, greet, end."""
    client = AsyncOpenAI(
        api_key="sk-test", base_url="http://openai.test/v1", http_client=httpx.AsyncClient(transport=transport)
    )
    plan = openai_session(result, client=client)
    cached = CachedTokens().watch(plan.session)
    reported = asyncio.Event()

    def on_usage(event: SessionUsageUpdatedEvent) -> None:
        if any(isinstance(usage, LLMModelUsage) and usage.input_tokens for usage in event.usage.model_usage):
            reported.set()

    plan.session.on("session_usage_updated", on_usage)
    await plan.session.start(Agent(instructions=result.prompt))
    try:
        await plan.session.generate_reply(instructions=f"Greet the caller with exactly: {GREETING}")
        await asyncio.wait_for(reported.wait(), 30)
    finally:
        await plan.session.aclose()
        await client.close()
    return cached


def text_of(message: Mapping[str, Any]) -> str:
    content = message["content"]
    if isinstance(content, str):
        return content
    return "".join(part["text"] for part in content if part.get("type") == "text")


def counter(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


@pytest.fixture(autouse=True)
def _openai_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")  # STT and TTS are built too (never called)


async def test_two_calls_of_one_version_send_the_same_key_and_first_message_an_edit_changes_the_key() -> None:
    transport = RecordingOpenAI()
    prompt = "You are Dana, the receptionist of a dental practice. " * 60
    await one_call(result_for(1736845200000.0, prompt), transport)
    await one_call(result_for(1736845200000.0, prompt), transport)
    await one_call(result_for(1736845299000.0, prompt + "Edited."), transport)
    first, second, edited = transport.requests

    assert first["prompt_cache_key"] == second["prompt_cache_key"] == prompt_cache_key(AGENT_ID, 1736845200000.0)
    assert edited["prompt_cache_key"] != first["prompt_cache_key"]
    assert AGENT_ID not in first["prompt_cache_key"]  # hashed

    assert json.dumps(first["messages"][0]) == json.dumps(second["messages"][0])  # byte-identical
    assert first["messages"][0]["role"] == "system"
    assert text_of(first["messages"][0]) == prompt
    greeting = first["messages"][-1]
    assert greeting["role"] == "system"  # the per-call instruction comes after the prompt
    assert GREETING in text_of(greeting)
    assert text_of(edited["messages"][0]) == prompt + "Edited."


async def test_cached_prompt_tokens_are_counted_per_session_and_in_prometheus() -> None:
    before = counter("agent_llm_prompt_cached_tokens_total")
    cached = await one_call(result_for(1736845200000.0, "Be brief."), RecordingOpenAI())
    assert cached.cached_tokens == CACHED
    assert cached.prompt_tokens == 1300
    assert counter("agent_llm_prompt_cached_tokens_total") - before == CACHED


def test_the_key_is_one_per_version() -> None:
    assert prompt_cache_key("a", 1.0) == prompt_cache_key("a", 1.0)
    assert prompt_cache_key("a", 1.0) != prompt_cache_key("a", 2.0)
    assert prompt_cache_key("a", 1.0) != prompt_cache_key("b", 1.0)
    assert len(prompt_cache_key("a", 1.0)) <= 64


def test_usage_totals_repeated_by_later_events_are_counted_once() -> None:
    before = counter("agent_llm_prompt_cached_tokens_total")
    cached = CachedTokens()
    cached.update(prompt_tokens=1300, cached_tokens=1024)
    cached.update(prompt_tokens=1300, cached_tokens=1024)  # e.g. a TTS metric re-sends the totals
    cached.update(prompt_tokens=2700, cached_tokens=2048)
    assert (cached.prompt_tokens, cached.cached_tokens) == (2700, 2048)
    assert counter("agent_llm_prompt_cached_tokens_total") - before == 2048
