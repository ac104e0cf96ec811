"""``POST /v1/chat/completions``: streamed (SSE) and plain answers, usage as OpenAI reports it."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import structlog
from aiohttp import web

from devtools.openai_standin.config import StandinConfig
from devtools.openai_standin.errors import bad_request, read_json
from devtools.openai_standin.prompt_cache import PromptCache, tokens
from devtools.openai_standin.replies import reply_to, reply_tokens
from devtools.openai_standin.stats import Stats

log = structlog.get_logger("openai_standin.chat")


def message_text(content: Any) -> str:
    """A message's text: a string, or the ``text`` parts of a content list."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type") == "text")
    raise bad_request("message content must be a string or a list of parts")


def parse_messages(body: dict[str, Any]) -> list[tuple[str, str]]:
    raw = body.get("messages")
    if not isinstance(raw, list) or not raw:
        raise bad_request("messages must be a non-empty list")
    out: list[tuple[str, str]] = []
    for item in raw:
        if not isinstance(item, dict) or not isinstance(item.get("role"), str):
            raise bad_request("each message needs a role")
        out.append((item["role"], message_text(item.get("content"))))
    return out


def _limit(body: dict[str, Any]) -> int | None:
    for name in ("max_completion_tokens", "max_tokens"):
        value = body.get(name)
        if value is not None:
            if not isinstance(value, int) or value < 1:
                raise bad_request(f"{name} must be a positive integer")
            return value
    return None


class ChatEndpoint:
    def __init__(self, config: StandinConfig, stats: Stats, cache: PromptCache) -> None:
        self._config = config
        self._stats = stats
        self._cache = cache

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await read_json(request)
        messages = parse_messages(body)
        limit = _limit(body)
        model = str(body.get("model") or "gpt-4o-mini")
        key = body.get("prompt_cache_key")
        key = key if isinstance(key, str) and key else None
        prompt = tokens(messages)
        cached = self._cache.lookup_and_store(key, prompt)
        self._stats.chat(messages, key, cached)
        users = [text for role, text in messages if role == "user"]
        reply = reply_to(users[-1] if users else None)
        parts, cut = reply_tokens(reply, limit)
        self._stats.reply("".join(parts))
        usage = {
            "prompt_tokens": len(prompt),
            "completion_tokens": len(parts),
            "total_tokens": len(prompt) + len(parts),
            "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
        }
        log.info("chat", model=model, messages=len(messages), prompt_tokens=len(prompt), cached_tokens=cached)
        finish = "length" if cut else "stop"
        ident = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        await asyncio.sleep(self._config.llm_ttft_ms / 1000)
        if not body.get("stream"):
            return web.json_response(
                {
                    "id": ident,
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": "".join(parts)},
                            "finish_reason": finish,
                        }
                    ],
                    "usage": usage,
                }
            )
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        return await self._stream(request, ident, model, parts, finish, usage if include_usage else None)

    async def _stream(
        self,
        request: web.Request,
        ident: str,
        model: str,
        parts: list[str],
        finish: str,
        usage: dict[str, Any] | None,
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        created = int(time.time())

        def chunk(delta: dict[str, Any], finish_reason: str | None) -> dict[str, Any]:
            choice = {"index": 0, "delta": delta, "finish_reason": finish_reason}
            return {
                "id": ident,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [choice],
            }

        async def send(payload: dict[str, Any] | str) -> None:
            data = payload if isinstance(payload, str) else json.dumps(payload)
            await response.write(f"data: {data}\n\n".encode())

        await send(chunk({"role": "assistant", "content": ""}, None))
        gap = 1 / self._config.tokens_per_second
        for index, part in enumerate(parts):
            if index:
                await asyncio.sleep(gap)
            await send(chunk({"content": part}, None))
        await send(chunk({}, finish))
        if usage is not None:
            await send(
                {
                    "id": ident,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    "choices": [],
                    "usage": usage,
                }
            )
        await send("[DONE]")
        await response.write_eof()
        return response
