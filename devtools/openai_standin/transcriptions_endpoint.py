"""``POST /v1/audio/transcriptions``: the file endpoint ``openai.STT(use_realtime=False)``
posts one WAV per VAD segment to. The same ear and phrase book label each utterance in the
file; a file without speech gets an empty ``text``."""

from __future__ import annotations

import asyncio
import io
import wave

import numpy as np
import structlog
from aiohttp import web

from devtools.openai_standin.config import StandinConfig
from devtools.openai_standin.errors import bad_request
from devtools.openai_standin.hearing import SAMPLE_RATE, Ear, PhraseBook
from devtools.openai_standin.stats import Stats

log = structlog.get_logger("openai_standin.transcriptions")
MAX_FILE_BYTES = 25 * 1024 * 1024  # OpenAI's documented upload limit


def mono_24k(wav: bytes) -> bytes:
    """A 16-bit PCM WAV as s16le mono at 24 kHz (linear interpolation: espeak-ng's
    speech has little energy near the Nyquist rate of the usual 16 or 48 kHz uploads)."""
    try:
        with wave.open(io.BytesIO(wav)) as source:
            if source.getsampwidth() != 2:
                raise bad_request("file must be 16-bit PCM WAV")
            channels, rate = source.getnchannels(), source.getframerate()
            samples = np.frombuffer(source.readframes(source.getnframes()), dtype="<i2")
    except (wave.Error, EOFError) as exc:
        raise bad_request("file must be a WAV file") from exc
    mono = samples.reshape(-1, channels).mean(axis=1) if channels > 1 else samples.astype(np.float64)
    if rate != SAMPLE_RATE and len(mono):
        positions = np.arange(0, len(mono), rate / SAMPLE_RATE)
        mono = np.interp(positions, np.arange(len(mono)), mono)
    return np.asarray(mono, dtype="<i2").tobytes()


class TranscriptionsEndpoint:
    def __init__(self, config: StandinConfig, stats: Stats, book: PhraseBook) -> None:
        self._config = config
        self._stats = stats
        self._book = book

    async def handle(self, request: web.Request) -> web.Response:
        if request.content_length is not None and request.content_length > MAX_FILE_BYTES:
            raise bad_request("file is larger than 25 MB")
        try:
            form = await request.post()
        except ValueError as exc:
            raise bad_request("the body must be multipart form data") from exc
        upload = form.get("file")
        if not isinstance(upload, web.FileField):
            raise bad_request("file is required")
        pcm = mono_24k(upload.file.read())
        ear = Ear(silence_ms=500)
        heard = [u for kind, u in ear.hear(pcm + bytes(SAMPLE_RATE * 2)) if kind == "stopped"]
        if ear.speaking:
            heard.append(ear.finish())
        labels = [await asyncio.to_thread(self._book.label, u, self._stats.next_utterance()) for u in heard]
        text = " ".join(labels)
        log.info("transcription", utterances=len(labels), seconds=round(len(pcm) / 2 / SAMPLE_RATE, 2))
        await asyncio.sleep(self._config.stt_delay_ms / 1000)
        for label in labels:
            self._stats.transcript(label)
        response_format = str(form.get("response_format") or "json")
        if response_format == "text":
            return web.Response(text=text)
        body: dict[str, object] = {"text": text}
        if response_format == "verbose_json":
            body.update(language="english", duration=len(pcm) / 2 / SAMPLE_RATE, segments=[])
        return web.json_response(body)
