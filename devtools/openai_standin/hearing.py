"""How the stand-in "hears": energy-based utterance detection and a phrase book.

No ASR runs offline, so a transcript is a label for what was heard, chosen honestly from the
audio alone:

* :class:`Ear` splits incoming 24 kHz PCM into 20 ms frames; a frame is voiced when its RMS
  is above :data:`VOICED_DBFS`. Speech starts after :data:`START_FRAMES` voiced frames in a
  row and stops after ``silence_ms`` (the client's ``turn_detection.silence_duration_ms``)
  without one, so silence or a click never makes an utterance, and one utterance makes
  exactly one.
* :class:`PhraseBook` renders known phrases with ``devtools.speech`` and labels an utterance
  with the phrase it matches (:meth:`PhraseBook.match`), else ``utterance N (d.d s)``.

Matching compares band-energy spectrograms (six bands from 100 Hz to 8 kHz, per 20 ms frame,
in dB below the utterance's loudest frame) by dynamic time warping, because what a worker's
STT receives went through Opus, livekit-server's jitter buffer and livekit's resampler: on a
loaded machine the start of a call arrives stretched and with concealed gaps, which a fixed
alignment does not survive. ``python -m devtools.openai_standin.match_check`` measures the
costs :data:`MAX_COST` sits between (figures in docs/openai-standin.md).
"""

from __future__ import annotations

import functools
import itertools
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
SPAN_DB = 30.0
"""An utterance's span runs from its first to its last frame within this of its loudest."""
FLOOR_DB = 45.0
"""Band energies are compared down to this far below the loudest frame."""
DURATION_RATIO = (0.8, 1.35)
"""Heard duration / phrase duration for a phrase to be a candidate (transport stretches)."""
MAX_COST = 0.065
"""The largest mean warped distance at which a candidate phrase is named."""
_BAND_EDGES_HZ = (100, 400, 800, 1500, 2500, 4000, 8000)

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

Features = npt.NDArray[np.float64]


def frame_dbfs(samples: npt.NDArray[np.int16]) -> npt.NDArray[np.float64]:
    """RMS level of each whole 20 ms frame, in dB relative to full scale."""
    count = len(samples) // FRAME
    frames = samples[: count * FRAME].astype(np.float64).reshape(count, FRAME)
    rms = np.sqrt(np.mean(frames**2, axis=1)) / 32768.0
    return np.asarray(20 * np.log10(np.maximum(rms, 1e-9)), dtype=np.float64)


@dataclass
class Utterance:
    """A stretch of speech: when it started and stopped (ms of audio since the stream
    began) and its audio from the first to the last voiced frame."""

    start_ms: int
    end_ms: int
    pcm: bytes = b""

    @property
    def duration_s(self) -> float:
        return (self.end_ms - self.start_ms) / 1000


@dataclass
class Ear:
    """Feed PCM with :meth:`hear`; it answers the utterances that started and stopped."""

    silence_ms: int = 500
    _pending: bytes = b""
    _frames_seen: int = 0
    _silent: int = 0
    _frames: list[bytes] = field(default_factory=list)
    _start_frame: int | None = None

    @property
    def speaking(self) -> bool:
        return self._start_frame is not None

    def hear(self, pcm: bytes) -> list[tuple[str, Utterance]]:
        """``("started", u)`` / ``("stopped", u)`` events for this chunk, in order."""
        data = self._pending + pcm
        whole = len(data) // (FRAME * 2) * FRAME * 2
        self._pending = data[whole:]
        levels = frame_dbfs(np.frombuffer(data[:whole], dtype="<i2"))
        events: list[tuple[str, Utterance]] = []
        for index, level in enumerate(levels):
            event = self._frame(data[index * FRAME * 2 : (index + 1) * FRAME * 2], float(level))
            if event is not None:
                events.append(event)
        return events

    def _frame(self, frame: bytes, level: float) -> tuple[str, Utterance] | None:
        index = self._frames_seen
        self._frames_seen += 1
        voiced = level > VOICED_DBFS
        if self._start_frame is None:
            self._frames = [*self._frames[-(START_FRAMES - 1) :], frame] if voiced else []
            if len(self._frames) >= START_FRAMES:
                self._start_frame = index - START_FRAMES + 1
                self._silent = 0
                return "started", Utterance(self._start_frame * FRAME_MS, (index + 1) * FRAME_MS)
            return None
        self._frames.append(frame)
        self._silent = 0 if voiced else self._silent + 1
        too_long = len(self._frames) * FRAME_MS >= MAX_UTTERANCE_MS
        if self._silent * FRAME_MS >= self.silence_ms or too_long:
            return "stopped", self.finish()
        return None

    def finish(self) -> Utterance:
        """End the current utterance now (a client commit); trailing silence is cut off."""
        assert self._start_frame is not None
        frames = self._frames[: len(self._frames) - self._silent]
        start_ms = self._start_frame * FRAME_MS
        utterance = Utterance(start_ms, start_ms + len(frames) * FRAME_MS, b"".join(frames))
        self.clear()
        return utterance

    def clear(self) -> None:
        self._start_frame, self._silent, self._frames = None, 0, []


@functools.cache
def _bands() -> tuple[npt.NDArray[np.float64], list[npt.NDArray[np.bool_]]]:
    freqs = np.fft.rfftfreq(FRAME, 1 / SAMPLE_RATE)
    masks = [(freqs >= low) & (freqs < high) for low, high in itertools.pairwise(_BAND_EDGES_HZ)]
    return np.hanning(FRAME), masks


def features(pcm: bytes) -> Features:
    """Per 20 ms frame, the energy of each band in dB below the loudest frame (floored),
    over the span from the first to the last frame within :data:`SPAN_DB` of the loudest:
    the same numbers at any playback volume."""
    samples = np.frombuffer(pcm[: len(pcm) // (FRAME * 2) * FRAME * 2], dtype="<i2").astype(np.float64)
    if len(samples) < FRAME:
        return np.zeros((0, len(_BAND_EDGES_HZ) - 1))
    window, masks = _bands()
    spectrum = np.abs(np.fft.rfft(samples.reshape(-1, FRAME) * window, axis=1)) ** 2
    energy = np.stack([spectrum[:, mask].sum(axis=1) for mask in masks], axis=1)
    bands_db = 10 * np.log10(energy + 1e-3)
    total_db = 10 * np.log10(energy.sum(axis=1) + 1e-3)
    loudest = total_db.max()
    loud = np.flatnonzero(total_db > loudest - SPAN_DB)
    span = bands_db[loud[0] : loud[-1] + 1]
    return np.asarray((np.maximum(span, loudest - FLOOR_DB) - loudest) / FLOOR_DB, dtype=np.float64)


def warped_cost(heard: Features, phrase: Features) -> float:
    """Dynamic time warping of two feature sequences: the cheapest alignment's summed
    per-frame distance (mean absolute band difference), divided by both lengths."""
    n, m = len(heard), len(phrase)
    cost = np.abs(heard[:, None, :] - phrase[None, :, :]).mean(axis=2)
    previous = np.full(m + 1, np.inf)
    previous[0] = 0.0
    for i in range(n):
        # arriving from above or the diagonal, then any run of steps along the row
        vertical = np.minimum(previous[1:], previous[:-1]) + cost[i]
        row = np.full(m + 1, np.inf)
        running = np.inf
        for j in range(m):
            running = min(float(vertical[j]), running + float(cost[i, j]))
            row[j + 1] = running
        previous = row
    return float(previous[m]) / (n + m)


class PhraseBook:
    """Known phrases, rendered once (lazily), and the rule that labels an utterance."""

    def __init__(self, phrases: Sequence[str]) -> None:
        self._phrases = tuple(dict.fromkeys(p.strip() for p in phrases if p.strip()))

    @functools.cached_property
    def _entries(self) -> list[tuple[str, Features]]:
        rendered = [(phrase, features(speak(phrase, sample_rate=SAMPLE_RATE))) for phrase in self._phrases]
        return [(phrase, feats) for phrase, feats in rendered if len(feats)]

    def warm(self) -> None:
        """Render the phrases now rather than on the first utterance."""
        _ = self._entries

    def match(self, pcm: bytes) -> str | None:
        """The phrase whose duration fits (:data:`DURATION_RATIO`) and whose warped cost is
        lowest, if at most :data:`MAX_COST`; else ``None``."""
        heard = features(pcm)
        if len(heard) < START_FRAMES:
            return None
        low, high = DURATION_RATIO
        costs = [
            (warped_cost(heard, feats), phrase)
            for phrase, feats in self._entries
            if low <= len(heard) / len(feats) <= high
        ]
        best = min(costs, default=None)
        return best[1] if best is not None and best[0] <= MAX_COST else None

    def label(self, utterance: Utterance, sequence: int) -> str:
        return self.match(utterance.pcm) or f"utterance {sequence} ({utterance.duration_s:.1f} s)"
