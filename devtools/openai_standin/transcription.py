"""The transcription session (``intent=transcription``) that ``openai.STT(use_realtime=True)``
streams the caller's audio into: server VAD events, then after the STT delay one transcript
(a ``delta`` and a ``completed``) per utterance."""

from __future__ import annotations

import asyncio
import base64
import binascii
from typing import Any

import structlog
from aiohttp import web

from devtools.openai_standin import realtime_ws
from devtools.openai_standin.config import StandinConfig
from devtools.openai_standin.hearing import Ear, PhraseBook, Utterance
from devtools.openai_standin.stats import Stats

log = structlog.get_logger("openai_standin.transcription")


def silence_ms(session: Any, default: int) -> int:
    """``audio.input.turn_detection.silence_duration_ms`` of a GA session object, if set."""
    try:
        value = session["audio"]["input"]["turn_detection"]["silence_duration_ms"]
    except (KeyError, TypeError):
        return default
    return int(value) if isinstance(value, (int, float)) and value > 0 else default


class HearingSession:
    """What both realtime sessions share: the ear, utterance bookkeeping, transcripts."""

    def __init__(
        self, ws: web.WebSocketResponse, config: StandinConfig, stats: Stats, book: PhraseBook, model: str
    ) -> None:
        self.ws = ws
        self.config = config
        self.stats = stats
        self.book = book
        self.model = model
        self.ear = Ear()
        self.item_id = ""
        self.tasks: set[asyncio.Task[None]] = set()

    async def send(self, event: dict[str, Any]) -> None:
        await realtime_ws.send(self.ws, event)

    async def error(self, code: str, message: str, event_id: str | None = None) -> None:
        log.warning("realtime_bad_event", code=code)
        await self.send(
            {
                "type": "error",
                "error": {"type": "invalid_request_error", "code": code, "message": message, "event_id": event_id},
            }
        )

    def spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def close(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    async def append(self, event: dict[str, Any]) -> None:
        try:
            pcm = base64.b64decode(str(event.get("audio", "")), validate=True)
        except (binascii.Error, ValueError):
            await self.error("invalid_audio", "audio must be base64 PCM", event.get("event_id"))
            return
        for kind, utterance in self.ear.hear(pcm):
            if kind == "started":
                self.item_id = realtime_ws.new_id("item")
                await self.speech_started(utterance)
            else:
                await self.speech_stopped(utterance)

    @property
    def server_vad(self) -> bool:
        """Whether the client asked for server turn detection (its VAD events and commits)."""
        return True

    async def speech_started(self, utterance: Utterance) -> None:
        if not self.server_vad:
            return
        await self.send(
            {"type": "input_audio_buffer.speech_started", "audio_start_ms": utterance.start_ms, "item_id": self.item_id}
        )

    async def speech_stopped(self, utterance: Utterance) -> None:
        if self.server_vad:
            await self.send(
                {"type": "input_audio_buffer.speech_stopped", "audio_end_ms": utterance.end_ms, "item_id": self.item_id}
            )
        await self.send({"type": "input_audio_buffer.committed", "item_id": self.item_id, "previous_item_id": None})
        # matching costs tens of milliseconds: off the loop, which serves every call
        label = await asyncio.to_thread(self.book.label, utterance, self.stats.next_utterance())
        log.info(
            "utterance_heard", duration_s=round(utterance.duration_s, 2), matched=not label.startswith("utterance ")
        )
        self.heard(self.item_id, label)
        self.spawn(self.transcribe(self.item_id, label, utterance))

    def heard(self, item_id: str, label: str) -> None:
        """A hook: the conversation session answers here."""

    async def transcribe(self, item_id: str, label: str, utterance: Utterance) -> None:
        await asyncio.sleep(self.config.stt_delay_ms / 1000)
        words = len(label.split())
        await self.send(
            {
                "type": "conversation.item.input_audio_transcription.delta",
                "item_id": item_id,
                "content_index": 0,
                "delta": label,
            }
        )
        usage = {
            "type": "tokens",
            "input_tokens": max(1, round(utterance.duration_s * 10)),
            "output_tokens": words,
            "total_tokens": max(1, round(utterance.duration_s * 10)) + words,
            "input_token_details": {"text_tokens": 0, "audio_tokens": max(1, round(utterance.duration_s * 10))},
        }
        await self.send(
            {
                "type": "conversation.item.input_audio_transcription.completed",
                "item_id": item_id,
                "content_index": 0,
                "transcript": label,
                "usage": usage,
            }
        )
        self.stats.transcript(label)

    async def commit(self, event: dict[str, Any]) -> None:
        if self.ear.speaking:
            await self.speech_stopped(self.ear.finish())
        else:
            await self.error("input_audio_buffer_commit_empty", "no speech in the buffer", event.get("event_id"))


class TranscriptionSession(HearingSession):
    async def start(self) -> None:
        await self.send(
            {
                "type": "session.created",
                "session": {"type": "transcription", "object": "realtime.transcription_session"},
            }
        )

    async def receive(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        if kind == "input_audio_buffer.append":
            await self.append(event)
        elif kind == "session.update":
            session = event.get("session") or {}
            self.ear.silence_ms = silence_ms(session, self.ear.silence_ms)
            await self.send({"type": "session.updated", "session": {"type": "transcription"}})
        elif kind == "input_audio_buffer.commit":
            await self.commit(event)
        elif kind == "input_audio_buffer.clear":
            self.ear.clear()
            await self.send({"type": "input_audio_buffer.cleared"})
        else:
            await self.error("unknown_event", f"unsupported event type {kind[:60]}", event.get("event_id"))
