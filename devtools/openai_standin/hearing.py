"""How the stand-in "hears": energy-based utterance detection and a phrase book.

No ASR runs offline, so a transcript is a label for what was heard, chosen honestly from the
audio alone:

* :class:`Ear` splits incoming 24 kHz PCM into 20 ms frames; a frame is voiced when its RMS
  is above :data:`VOICED_DBFS`. Speech starts after :data:`START_FRAMES` voiced frames in a
  row and stops after ``silence_ms`` (the client's ``turn_detection.silence_duration_ms``)
  without one, so silence or a click never makes an utterance, and one utterance makes
  exactly one.
* :class:`PhraseBook` renders known phrases with ``devtools.speech`` and labels an utterance
  with the phrase whose voiced duration is within :data:`DURATION_TOLERANCE` and whose energy
  envelope correlates best (at least :data:`MIN_CORRELATION`); otherwise the label is
  ``utterance N (d.d s)``. Envelopes survive Opus and resampling, which is why they are used.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from devtools.speech import speak

SAMPLE_RATE = 24000
FRAME = SAMPLE_RATE // 50  # 20 ms
FRAME_MS = 20
VOICED_DBFS = -45.0
START_FRAMES = 3
MAX_UTTERANCE_MS = 30_000
DURATION_TOLERANCE = 0.25
MIN_CORRELATION = 0.6
_ENVELOPE_POINTS = 64
SPAN_DB = 30.0

DEFAULT_PHRASES: tuple[str, ...] = (
    "Hello, can you hear me?",
    "I would like to book a table for two.",
    "What are your opening hours?",
    "Can I change my reservation?",
    "Thank you, goodbye.",
    "Yes please.",
    "No, thank you.",
    "Do you have a vegetarian menu?",
    "I need help with my order.",
    "Where are you located?",
)


def frame_dbfs(samples: npt.NDArray[np.int16]) -> npt.NDArray[np.float64]:
    """RMS level of each whole 20 ms frame, in dB relative to full scale."""
    count = len(samples) // FRAME
    frames = samples[: count * FRAME].astype(np.float64).reshape(count, FRAME)
    rms = np.sqrt(np.mean(frames**2, axis=1)) / 32768.0
    return np.asarray(20 * np.log10(np.maximum(rms, 1e-9)), dtype=np.float64)


@dataclass
class Utterance:
    """A stretch of speech: when it started and stopped (ms of audio since the stream began)."""

    start_ms: int
    end_ms: int
    levels: list[float]
    """Per-frame level (dBFS) from the first to the last voiced frame."""

    @property
    def duration_s(self) -> float:
        return (self.end_ms - self.start_ms) / 1000


@dataclass
class Ear:
    """Feed PCM with :meth:`hear`; it answers the utterances that started and stopped."""

    silence_ms: int = 500
    _pending: bytes = b""
    _frames_seen: int = 0
    _run: int = 0
    _silent: int = 0
    _levels: list[float] = field(default_factory=list)
    _start_frame: int | None = None

    @property
    def speaking(self) -> bool:
        return self._start_frame is not None

    def hear(self, pcm: bytes) -> list[tuple[str, Utterance]]:
        """``("started", u)`` / ``("stopped", u)`` events for this chunk, in order."""
        data = self._pending + pcm
        whole = len(data) // (FRAME * 2) * FRAME * 2
        self._pending = data[whole:]
        events: list[tuple[str, Utterance]] = []
        for level in frame_dbfs(np.frombuffer(data[:whole], dtype="<i2")):
            event = self._frame(float(level))
            if event is not None:
                events.append(event)
        return events

    def _frame(self, level: float) -> tuple[str, Utterance] | None:
        index = self._frames_seen
        self._frames_seen += 1
        voiced = level > VOICED_DBFS
        if self._start_frame is None:
            self._run = self._run + 1 if voiced else 0
            self._levels = [*self._levels[-(START_FRAMES - 1) :], level] if voiced else []
            if self._run >= START_FRAMES:
                self._start_frame = index - START_FRAMES + 1
                self._silent = 0
                return "started", self._current(index + 1)
            return None
        self._levels.append(level)
        self._silent = 0 if voiced else self._silent + 1
        too_long = (index + 1 - self._start_frame) * FRAME_MS >= MAX_UTTERANCE_MS
        if self._silent * FRAME_MS >= self.silence_ms or too_long:
            return "stopped", self.finish()
        return None

    def _current(self, end_frame: int) -> Utterance:
        assert self._start_frame is not None
        return Utterance(self._start_frame * FRAME_MS, end_frame * FRAME_MS, list(self._levels))

    def finish(self) -> Utterance:
        """End the current utterance now (a client commit); trailing silence is cut off."""
        assert self._start_frame is not None
        levels = self._levels[: len(self._levels) - self._silent] if self._silent else self._levels
        utterance = Utterance(self._start_frame * FRAME_MS, (self._start_frame + len(levels)) * FRAME_MS, levels)
        self.clear()
        return utterance

    def clear(self) -> None:
        self._start_frame, self._run, self._silent, self._levels = None, 0, 0, []


def voiced_span(pcm: bytes) -> list[float]:
    """The levels of ``pcm`` from its first to its last voiced frame."""
    levels = frame_dbfs(np.frombuffer(pcm, dtype="<i2"))
    voiced = np.flatnonzero(levels > VOICED_DBFS)
    if len(voiced) == 0:
        return []
    return [float(x) for x in levels[voiced[0] : voiced[-1] + 1]]


def _trimmed(levels: Sequence[float]) -> npt.NDArray[np.float64]:
    """``levels`` from the first to the last frame within :data:`SPAN_DB` of the loudest,
    floored :data:`SPAN_DB` below it: the same span and shape at any playback volume."""
    values = np.asarray(levels, dtype=np.float64)
    floor = values.max() - SPAN_DB
    loud = np.flatnonzero(values > floor)
    return np.asarray(np.maximum(values[loud[0] : loud[-1] + 1], floor), dtype=np.float64)


def _envelope(clipped: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    positions = np.linspace(0, len(clipped) - 1, _ENVELOPE_POINTS)
    curve = np.interp(positions, np.arange(len(clipped)), clipped)
    spread = curve.std()
    return np.asarray((curve - curve.mean()) / spread if spread > 0 else curve * 0, dtype=np.float64)


class PhraseBook:
    """Known phrases, rendered once (lazily), and the rule that labels an utterance."""

    def __init__(self, phrases: Sequence[str]) -> None:
        self._phrases = tuple(dict.fromkeys(p for p in phrases if p.strip()))

    @functools.cached_property
    def _entries(self) -> list[tuple[str, float, npt.NDArray[np.float64]]]:
        entries = []
        for phrase in self._phrases:
            levels = voiced_span(speak(phrase, sample_rate=SAMPLE_RATE))
            if levels:
                span = _trimmed(levels)
                entries.append((phrase, len(span) * FRAME_MS / 1000, _envelope(span)))
        return entries

    def warm(self) -> None:
        """Render the phrases now rather than on the first utterance."""
        _ = self._entries

    def match(self, levels: Sequence[float]) -> str | None:
        """The phrase this utterance is, or ``None`` when none is close enough."""
        if len(levels) < START_FRAMES:
            return None
        span = _trimmed(levels)
        duration = len(span) * FRAME_MS / 1000
        heard = _envelope(span)
        best: tuple[float, str] | None = None
        for phrase, phrase_duration, envelope in self._entries:
            if abs(math.log(duration / phrase_duration)) > math.log(1 + DURATION_TOLERANCE):
                continue
            score = float(np.dot(heard, envelope) / _ENVELOPE_POINTS)
            if score >= MIN_CORRELATION and (best is None or score > best[0]):
                best = (score, phrase)
        return best[1] if best else None

    def label(self, utterance: Utterance, sequence: int) -> str:
        return self.match(utterance.levels) or f"utterance {sequence} ({utterance.duration_s:.1f} s)"
