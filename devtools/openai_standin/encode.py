"""Speech rendered and encoded in the formats ``/v1/audio/speech`` offers.

PCM is s16le 24 kHz mono, as OpenAI documents it; the other formats go through PyAV (installed
with livekit-agents) with the codec and container OpenAI returns for them. Renders are cached,
since a load test asks for the same greeting and replies again and again.
"""

from __future__ import annotations

import functools
import io
import zlib
from fractions import Fraction
from typing import cast

import av
import numpy as np
from av.audio.stream import AudioStream

from devtools.speech import DEFAULT_WPM, speak, wav_bytes

SAMPLE_RATE = 24000
CONTENT_TYPES = {
    "pcm": "audio/pcm",
    "wav": "audio/wav",
    "mp3": "audio/mpeg",
    "opus": "audio/ogg",
    "aac": "audio/aac",
    "flac": "audio/flac",
}
# (container, codec, encoder sample rate): opus only encodes at 48 kHz and friends.
_AV_FORMATS = {
    "mp3": ("mp3", "libmp3lame", 24000),
    "opus": ("ogg", "libopus", 48000),
    "aac": ("adts", "aac", 24000),
    "flac": ("flac", "flac", 24000),
}
_ESPEAK_VOICES = ("en-us", "en-us+m3", "en-us+f3", "en-gb", "en-us+m7", "en-us+f2")
_KNOWN_VOICES = {"alloy": "en-us", "ash": "en-us+m3", "coral": "en-us+f3", "sage": "en-gb"}


class UnsupportedFormat(ValueError):
    """The request asked for a ``response_format`` the stand-in does not produce."""


def espeak_voice(voice: str) -> str:
    """A fixed espeak-ng voice per OpenAI voice name, so a different voice sounds different."""
    return _KNOWN_VOICES.get(voice) or _ESPEAK_VOICES[zlib.crc32(voice.encode()) % len(_ESPEAK_VOICES)]


def words_per_minute(speed: float) -> int:
    return max(80, min(450, round(DEFAULT_WPM * speed)))


@functools.lru_cache(maxsize=128)
def render(text: str, voice: str, speed: float, response_format: str) -> bytes:
    """``text`` spoken by ``voice`` as a complete file (or raw PCM) in ``response_format``."""
    if response_format not in CONTENT_TYPES:
        raise UnsupportedFormat(f"response_format must be one of {sorted(CONTENT_TYPES)}")
    pcm = speak(text, sample_rate=SAMPLE_RATE, voice=espeak_voice(voice), words_per_minute=words_per_minute(speed))
    if response_format == "pcm":
        return pcm
    if response_format == "wav":
        return wav_bytes(pcm, SAMPLE_RATE)
    return _encode(pcm, *_AV_FORMATS[response_format])


def _encode(pcm: bytes, container: str, codec: str, rate: int) -> bytes:
    out = io.BytesIO()
    with av.open(out, mode="w", format=container) as output:
        stream = cast(AudioStream, output.add_stream(codec, rate=rate))
        stream.layout = "mono"
        resampler = av.AudioResampler(format=stream.format, layout="mono", rate=rate)
        frame = av.AudioFrame.from_ndarray(np.frombuffer(pcm, dtype="<i2").reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        frame.time_base = Fraction(1, SAMPLE_RATE)
        frame.pts = 0
        for converted in [*resampler.resample(frame), *resampler.resample(None)]:
            for packet in stream.encode(converted):
                output.mux(packet)
        for packet in stream.encode(None):
            output.mux(packet)
    return out.getvalue()
