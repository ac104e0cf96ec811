"""``POST /v1/audio/speech``: espeak-ng speech of ``input``, streamed after the TTFB delay.

``stream_format: "sse"`` answers ``text/event-stream`` with ``speech.audio.delta`` events
(base64 chunks of the requested format) and a final ``speech.audio.done`` with usage, as
livekit-plugins-openai parses them; otherwise the body is the audio itself, chunked.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
from typing import Any

import structlog
from aiohttp import web

from devtools.openai_standin.config import AUDIO_CHUNK_MS, AUDIO_SPEEDUP, StandinConfig
from devtools.openai_standin.encode import CONTENT_TYPES, SAMPLE_RATE, UnsupportedFormat, render
from devtools.openai_standin.errors import bad_request, read_json
from devtools.openai_standin.prompt_cache import tokens
from devtools.openai_standin.stats import Stats
from devtools.speech import SpeechError

log = structlog.get_logger("openai_standin.speech")
MAX_INPUT_CHARS = 4096  # OpenAI's documented limit for input


def chunks(audio: bytes, duration_ms: float) -> list[bytes]:
    """``audio`` (``duration_ms`` of sound) cut into pieces of about :data:`AUDIO_CHUNK_MS`."""
    count = max(1, math.ceil(duration_ms / AUDIO_CHUNK_MS))
    size = max(2, math.ceil(len(audio) / count))
    size += size % 2  # whole 16-bit samples, for pcm and wav
    return [audio[i : i + size] for i in range(0, len(audio), size)] or [b""]


class SpeechEndpoint:
    def __init__(self, config: StandinConfig, stats: Stats) -> None:
        self._config = config
        self._stats = stats

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await read_json(request)
        text = body.get("input")
        if not isinstance(text, str) or not text.strip():
            raise bad_request("input must be a non-empty string")
        if len(text) > MAX_INPUT_CHARS:
            raise bad_request(f"input is longer than {MAX_INPUT_CHARS} characters")
        response_format = str(body.get("response_format") or "mp3")
        voice = str(body.get("voice") or "alloy")
        speed = body.get("speed", 1.0)
        if not isinstance(speed, (int, float)) or not 0.25 <= speed <= 4.0:
            raise bad_request("speed must be a number from 0.25 to 4.0")
        sse = body.get("stream_format") == "sse"
        self._stats.speech(text)
        try:
            audio = await asyncio.to_thread(render, text, voice, float(speed), response_format)
            pcm = await asyncio.to_thread(render, text, voice, float(speed), "pcm")
        except UnsupportedFormat as exc:
            raise bad_request(str(exc)) from exc
        except SpeechError as exc:
            log.error("speech_failed", reason=str(exc)[:200])
            raise web.HTTPInternalServerError(
                text=json.dumps({"error": {"message": "speech rendering failed"}})
            ) from exc
        log.info("speech", format=response_format, sse=sse, chars=len(text), bytes=len(audio))
        await asyncio.sleep(self._config.tts_ttfb_ms / 1000)
        content_type = "text/event-stream" if sse else CONTENT_TYPES[response_format]
        response = web.StreamResponse(headers={"Content-Type": content_type})
        await response.prepare(request)
        pause = AUDIO_CHUNK_MS / 1000 / AUDIO_SPEEDUP
        for index, piece in enumerate(chunks(audio, len(pcm) / (SAMPLE_RATE * 2) * 1000)):
            if index:
                await asyncio.sleep(pause)
            if sse:
                await _event(response, {"type": "speech.audio.delta", "audio": base64.b64encode(piece).decode()})
            else:
                await response.write(piece)
        if sse:
            input_tokens = len(tokens([("user", text)])) - 1
            usage = {"input_tokens": input_tokens, "output_tokens": len(audio) // 1000, "total_tokens": 0}
            usage["total_tokens"] = usage["input_tokens"] + usage["output_tokens"]
            await _event(response, {"type": "speech.audio.done", "usage": usage})
        await response.write_eof()
        return response


async def _event(response: web.StreamResponse, payload: dict[str, Any]) -> None:
    await response.write(f"data: {json.dumps(payload)}\n\n".encode())
