"""The realtime conversation session (``openai.realtime.RealtimeModel``): as much of the GA
protocol as a greeting (``response.create``) and a spoken answer to caller speech need.

A response speaks :func:`~devtools.openai_standin.replies.reply_to` the conversation's last
user message (a heard utterance's label, or a created text item) with espeak-ng, as
``response.output_audio.delta`` chunks and a matching transcript, then ``response.done``
with usage. Its first audio comes after the LLM TTFT plus the TTS TTFB delays.
"""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import structlog

from devtools.openai_standin import realtime_ws
from devtools.openai_standin.config import AUDIO_CHUNK_MS, AUDIO_SPEEDUP
from devtools.openai_standin.encode import SAMPLE_RATE, render
from devtools.openai_standin.hearing import Utterance
from devtools.openai_standin.prompt_cache import tokens
from devtools.openai_standin.replies import reply_to
from devtools.openai_standin.transcription import HearingSession, silence_ms

log = structlog.get_logger("openai_standin.conversation")
_CHUNK_BYTES = SAMPLE_RATE * 2 * AUDIO_CHUNK_MS // 1000
_NEVER_MS = 10**9
_SERVER_VAD_SILENCE_MS = 500


def item_text(item: dict[str, Any]) -> str:
    parts = item.get("content") or []
    return " ".join(str(p.get("text") or p.get("transcript") or "") for p in parts if isinstance(p, dict)).strip()


class ConversationSession(HearingSession):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.items: dict[str, dict[str, Any]] = {}
        self.instructions = ""
        self.voice = "alloy"
        self.turn_detection: dict[str, Any] | None = {
            "type": "server_vad",
            "create_response": True,
            "interrupt_response": True,
        }
        self.response: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.send({"type": "session.created", "session": self._session()})

    def _session(self) -> dict[str, Any]:
        return {"type": "realtime", "object": "realtime.session", "model": self.model, "output_modalities": ["audio"]}

    async def receive(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        if kind == "input_audio_buffer.append":
            await self.append(event)
        elif kind == "session.update":
            self._update(event.get("session") or {})
            await self.send({"type": "session.updated", "session": self._session()})
        elif kind == "conversation.item.create":
            await self._create_item(event)
        elif kind == "conversation.item.delete":
            item_id = str(event.get("item_id", ""))
            self.items.pop(item_id, None)
            await self.send({"type": "conversation.item.deleted", "item_id": item_id})
        elif kind == "conversation.item.truncate":
            await self.send(
                {
                    "type": "conversation.item.truncated",
                    "item_id": event.get("item_id"),
                    "content_index": event.get("content_index", 0),
                    "audio_end_ms": event.get("audio_end_ms", 0),
                }
            )
        elif kind == "response.create":
            self._respond((event.get("response") or {}).get("metadata"))
        elif kind == "response.cancel":
            await self._cancel()
        elif kind == "input_audio_buffer.commit":
            await self.commit(event)
        elif kind == "input_audio_buffer.clear":
            self.ear.clear()
            await self.send({"type": "input_audio_buffer.cleared"})
        else:
            await self.error("unknown_event", f"unsupported event type {kind[:60]}", event.get("event_id"))

    def _update(self, session: dict[str, Any]) -> None:
        if isinstance(session.get("instructions"), str):
            self.instructions = session["instructions"]
        audio = session.get("audio") or {}
        voice = (audio.get("output") or {}).get("voice")
        if isinstance(voice, str):
            self.voice = voice
        if "turn_detection" in (audio.get("input") or {}):
            self.turn_detection = audio["input"]["turn_detection"]
        # without turn detection an utterance lasts until the client commits it
        current = _SERVER_VAD_SILENCE_MS if self.ear.silence_ms == _NEVER_MS else self.ear.silence_ms
        self.ear.silence_ms = silence_ms(session, current) if self.server_vad else _NEVER_MS

    @property
    def server_vad(self) -> bool:
        return self.turn_detection is not None

    async def _create_item(self, event: dict[str, Any]) -> None:
        item = dict(event.get("item") or {})
        item.setdefault("id", realtime_ws.new_id("item"))
        item.setdefault("object", "realtime.item")
        item["status"] = "completed"
        self.items[item["id"]] = item
        previous = event.get("previous_item_id")
        await self.send(
            {
                "type": "conversation.item.added",
                "previous_item_id": None if previous == "root" else previous,
                "item": item,
            }
        )
        await self.send({"type": "conversation.item.done", "previous_item_id": None, "item": item})

    async def speech_started(self, utterance: Utterance) -> None:
        if self.response is not None and (self.turn_detection or {}).get("interrupt_response", True):
            await self._cancel()
        await super().speech_started(utterance)

    async def speech_stopped(self, utterance: Utterance) -> None:
        await super().speech_stopped(utterance)
        item = {
            "id": self.item_id,
            "object": "realtime.item",
            "type": "message",
            "role": "user",
            "status": "completed",
            "content": [{"type": "input_audio", "transcript": None}],
        }
        await self.send({"type": "conversation.item.added", "previous_item_id": None, "item": item})

    def heard(self, item_id: str, label: str) -> None:
        self.items[item_id] = {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_audio", "transcript": label}],
        }
        if self.server_vad and (self.turn_detection or {}).get("create_response", True):
            self._respond(None)

    def _respond(self, metadata: Any) -> None:
        if self.response is not None and not self.response.done():
            self.response.cancel()
        users = [item_text(item) for item in self.items.values() if item.get("role") == "user"]
        self.response = asyncio.create_task(self._speak(reply_to(users[-1] if users else None), metadata))

    async def _cancel(self) -> None:
        if self.response is not None and not self.response.done():
            self.response.cancel()
            await asyncio.gather(self.response, return_exceptions=True)
        self.response = None

    async def close(self) -> None:
        await self._cancel()
        await super().close()

    async def _speak(self, text: str, metadata: Any) -> None:
        response_id = realtime_ws.new_id("resp")
        item_id = realtime_ws.new_id("item")
        base = {"id": response_id, "object": "realtime.response", "metadata": metadata}
        await self.send({"type": "response.created", "response": {**base, "status": "in_progress", "output": []}})
        item: dict[str, Any] = {
            "id": item_id,
            "object": "realtime.item",
            "type": "message",
            "role": "assistant",
            "status": "in_progress",
            "content": [],
        }
        ids = {"response_id": response_id, "item_id": item_id, "output_index": 0}
        status = "cancelled"
        try:
            await self.send(
                {"type": "response.output_item.added", "response_id": response_id, "output_index": 0, "item": item}
            )
            await self.send({"type": "conversation.item.added", "previous_item_id": None, "item": item})
            await self.send(
                {
                    "type": "response.content_part.added",
                    **ids,
                    "content_index": 0,
                    "part": {"type": "audio", "transcript": ""},
                }
            )
            pcm = await asyncio.to_thread(render, text, self.voice, 1.0, "pcm")
            await asyncio.sleep((self.config.llm_ttft_ms + self.config.tts_ttfb_ms) / 1000)
            await self.send(
                {"type": "response.output_audio_transcript.delta", **ids, "content_index": 0, "delta": text}
            )
            for offset in range(0, len(pcm), _CHUNK_BYTES):
                if offset:
                    await asyncio.sleep(AUDIO_CHUNK_MS / 1000 / AUDIO_SPEEDUP)
                chunk = base64.b64encode(pcm[offset : offset + _CHUNK_BYTES]).decode()
                await self.send({"type": "response.output_audio.delta", **ids, "content_index": 0, "delta": chunk})
            await self.send({"type": "response.output_audio.done", **ids, "content_index": 0})
            await self.send(
                {"type": "response.output_audio_transcript.done", **ids, "content_index": 0, "transcript": text}
            )
            status = "completed"
            self.stats.reply(text)
            self.items[item_id] = {
                "type": "message",
                "role": "assistant",
                "content": [{"type": "output_audio", "transcript": text}],
            }
        finally:
            done_item: dict[str, Any] = {**item, "status": "completed" if status == "completed" else "incomplete"}
            done_item["content"] = [{"type": "output_audio", "transcript": text if status == "completed" else ""}]
            if status == "completed":
                await self.send(
                    {"type": "response.content_part.done", **ids, "content_index": 0, "part": done_item["content"][0]}
                )
            await self.send(
                {"type": "response.output_item.done", "response_id": response_id, "output_index": 0, "item": done_item}
            )
            prompt = len(
                tokens([("system", self.instructions), *[("user", item_text(i)) for i in self.items.values()]])
            )
            audio_out = len(text.split()) * 5
            usage = {
                "total_tokens": prompt + audio_out,
                "input_tokens": prompt,
                "output_tokens": audio_out,
                "input_token_details": {"text_tokens": prompt, "audio_tokens": 0, "cached_tokens": 0},
                "output_token_details": {"text_tokens": len(text.split()), "audio_tokens": audio_out},
            }
            await self.send(
                {"type": "response.done", "response": {**base, "status": status, "output": [done_item], "usage": usage}}
            )
            log.info("realtime_response", status=status, words=len(text.split()))
