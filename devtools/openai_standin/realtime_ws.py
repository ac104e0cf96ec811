"""``GET /v1/realtime``: the websocket for both realtime protocols the plugins use.

``?intent=transcription`` is the transcription session of ``openai.STT(use_realtime=True)``;
anything else is a conversation session of ``openai.realtime.RealtimeModel`` (GA event
names, as livekit-agents 1.8.9 reads them). Both hear the caller through the same
:class:`~devtools.openai_standin.hearing.Ear` and label utterances with one phrase book.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import structlog
from aiohttp import WSMsgType, web

from devtools.openai_standin.config import StandinConfig
from devtools.openai_standin.conversation import ConversationSession
from devtools.openai_standin.hearing import DEFAULT_PHRASES, PhraseBook
from devtools.openai_standin.stats import Stats
from devtools.openai_standin.transcription import TranscriptionSession

log = structlog.get_logger("openai_standin.realtime")
MAX_MESSAGE_BYTES = 4 * 1024 * 1024


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:20]}"


class RealtimeEndpoint:
    def __init__(self, config: StandinConfig, stats: Stats) -> None:
        self._config = config
        self._stats = stats
        self.book = PhraseBook([*DEFAULT_PHRASES, *config.phrases])

    def warm(self) -> None:
        """Render the phrase book before the first caller speaks (it blocks: run it in a thread)."""
        self.book.warm()

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=MAX_MESSAGE_BYTES, heartbeat=None)
        await ws.prepare(request)
        transcription = request.query.get("intent") == "transcription"
        model = request.query.get("model", "gpt-4o-transcribe" if transcription else "gpt-realtime")
        session: TranscriptionSession | ConversationSession
        if transcription:
            session = TranscriptionSession(ws, self._config, self._stats, self.book, model)
        else:
            session = ConversationSession(ws, self._config, self._stats, self.book, model)
        self._stats.session("transcription" if transcription else "conversation")
        log.info("realtime_connected", intent="transcription" if transcription else "conversation", model=model)
        await session.start()
        try:
            async for message in ws:
                if message.type != WSMsgType.TEXT:
                    continue
                try:
                    event = json.loads(message.data)
                except json.JSONDecodeError:
                    await session.error("invalid_json", "the event is not JSON")
                    continue
                if not isinstance(event, dict) or not isinstance(event.get("type"), str):
                    await session.error("invalid_event", "an event is an object with a type")
                    continue
                await session.receive(event)
        finally:
            await session.close()
        return ws


async def send(ws: web.WebSocketResponse, event: dict[str, Any]) -> None:
    """Send one server event (with an ``event_id``) unless the client has gone."""
    if not ws.closed:
        await ws.send_str(json.dumps({"event_id": new_id("event"), **event}))
