"""The stand-in's knobs: model delays and output pacing, with where each default comes from.

The defaults are the public figures docs/openai-standin.md cites for the models the
production session uses; a load test or a test can set them to 0 (answer at once) or to
anything else from the command line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_STT_DELAY_MS = 500
"""gpt-4o(-mini)-transcribe: end of speech (``speech_stopped``) to the final transcript."""
DEFAULT_LLM_TTFT_MS = 400
"""gpt-4o-mini: request to the first streamed token."""
DEFAULT_TTS_TTFB_MS = 300
"""gpt-4o-mini-tts: request to the first audio byte."""
DEFAULT_TOKENS_PER_SECOND = 60.0
"""gpt-4o-mini output speed once tokens flow."""
AUDIO_CHUNK_MS = 100
"""Streamed speech goes out in chunks of this much audio."""
AUDIO_SPEEDUP = 4.0
"""Streamed speech is generated this many times faster than real time."""


@dataclass(frozen=True)
class StandinConfig:
    """What the stand-in waits before answering, and how fast it streams."""

    stt_delay_ms: float = DEFAULT_STT_DELAY_MS
    """End of a caller utterance to its final transcript (STT and realtime input transcription)."""
    llm_ttft_ms: float = DEFAULT_LLM_TTFT_MS
    """Chat request (or realtime response) to its first token."""
    tts_ttfb_ms: float = DEFAULT_TTS_TTFB_MS
    """Speech request (or realtime response audio) to its first audio chunk."""
    tokens_per_second: float = DEFAULT_TOKENS_PER_SECOND
    """Pace of streamed chat tokens after the first."""
    phrases: tuple[str, ...] = field(default_factory=tuple)
    """Extra phrases the ear recognises, on top of the default phrase book."""

    def __post_init__(self) -> None:
        for name in ("stt_delay_ms", "llm_ttft_ms", "tts_ttfb_ms"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if self.tokens_per_second <= 0:
            raise ValueError("tokens_per_second must be > 0")


def read_phrases(path: Path) -> tuple[str, ...]:
    """One phrase per non-empty line; ``#`` starts a comment line."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return tuple(line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#"))
