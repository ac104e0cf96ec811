"""Real speech for tests and the OpenAI stand-in, rendered offline by espeak-ng.

Callers, the stand-in's TTS and its phrase book all need audio that is really speech (so
livekit's VAD and turn detector treat it as such) and is the same for the same text (so a
heard utterance can be matched to the phrase that made it). espeak-ng is deterministic and
ships as a Debian package the Makefile's ``system-deps`` installs; it writes 22,050 Hz WAV,
which sox's ``rate`` effect (a band-limited resampler, not a naive interpolation) turns into
the rate asked for. Renders are cached (LRU) because tests speak the same phrases repeatedly.
"""

from __future__ import annotations

import functools
import io
import shutil
import subprocess
import wave
from pathlib import Path

__all__ = ["DEFAULT_VOICE", "DEFAULT_WPM", "SpeechError", "speak", "wav_bytes", "write_wav"]

DEFAULT_VOICE = "en-us"
DEFAULT_WPM = 175
ESPEAK_RATE = 22050
_WAV_HEADER = 44  # espeak-ng's --stdout header: canonical RIFF/fmt/data, sizes left open
_RENDER_TIMEOUT_S = 30


class SpeechError(RuntimeError):
    """espeak-ng or sox is missing or failed; the message says which and why."""


def speak(
    text: str, *, sample_rate: int = 24000, voice: str = DEFAULT_VOICE, words_per_minute: int = DEFAULT_WPM
) -> bytes:
    """``text`` spoken as s16le mono PCM at ``sample_rate`` (cached per arguments)."""
    if not text.strip():
        raise ValueError("nothing to speak: text is empty")
    if sample_rate <= 0 or words_per_minute <= 0:
        raise ValueError("sample_rate and words_per_minute must be positive")
    return _render(text, sample_rate, voice, words_per_minute)


@functools.lru_cache(maxsize=256)
def _render(text: str, sample_rate: int, voice: str, words_per_minute: int) -> bytes:
    for tool in ("espeak-ng", "sox"):
        if shutil.which(tool) is None:
            raise SpeechError(f"{tool} is not installed (make system-deps installs it)")
    # "--" ends the options, so a text starting with "-" is spoken, not parsed.
    espeak = ["espeak-ng", "--stdout", "-v", voice, "-s", str(words_per_minute), "--", text]
    try:
        rendered = subprocess.run(espeak, capture_output=True, check=True, timeout=_RENDER_TIMEOUT_S).stdout
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        raise SpeechError(f"espeak-ng failed for voice {voice!r}: {exc}") from exc
    raw = rendered[_WAV_HEADER:]
    if sample_rate == ESPEAK_RATE:
        return raw
    raw_args = ["-t", "raw", "-e", "signed-integer", "-b", "16", "-c", "1", "-L"]
    sox = ["sox", *raw_args, "-r", str(ESPEAK_RATE), "-", *raw_args, "-r", str(sample_rate), "-", "rate", "-h"]
    try:
        return subprocess.run(sox, input=raw, capture_output=True, check=True, timeout=_RENDER_TIMEOUT_S).stdout
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        raise SpeechError(f"sox could not resample to {sample_rate} Hz: {exc}") from exc


def wav_bytes(pcm: bytes, sample_rate: int) -> bytes:
    """s16le mono ``pcm`` wrapped in a WAV container."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes(pcm)
    return buffer.getvalue()


def write_wav(
    path: Path | str,
    text: str,
    *,
    sample_rate: int = 24000,
    voice: str = DEFAULT_VOICE,
    words_per_minute: int = DEFAULT_WPM,
) -> Path:
    """Speak ``text`` into a WAV file at ``path``; returns the path."""
    target = Path(path)
    pcm = speak(text, sample_rate=sample_rate, voice=voice, words_per_minute=words_per_minute)
    target.write_bytes(wav_bytes(pcm, sample_rate))
    return target
