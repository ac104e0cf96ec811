"""Greeting audio per agent version, in RAM: the first words a caller hears, without a model.

An agent's greeting is fixed text in its config, so its speech is the same for every call
of one version in one voice. The worker synthesizes it when the version is loaded and
keeps it here (and in the host and Redis tiers, see ``AgentConfigService``); a job plays it
with ``session.say(text, audio=...)``. The audio is raw s16le mono PCM at
``sample_rate``, what the speech API's ``pcm`` format returns.

Like the RAM prompt tier, this structure does no I/O and reads no clock. It holds at most
one greeting per agent (a newer version replaces the older; a delete drops it), and at
most ``max_bytes`` of audio, the least recently used evicted first. Jobs read it from
their own threads while the service loop writes it, so every operation holds a lock.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from dataclasses import dataclass, field

from services.records import cache_key

DEFAULT_MAX_BYTES = 64 * 1024 * 1024
"""About 20 minutes of 24 kHz speech: a few hundred agents' greetings per process."""
MAX_GREETING_BYTES = 2 * 1024 * 1024
"""One greeting's bound (about 44 s at 24 kHz): a longer one is spoken live, never cached."""


def greeting_key(agent_id: str, updated_at: float, *, tts_model: str, voice: str) -> str:
    """``agentId:updatedAt`` plus the voice and speech model: one key per sound."""
    return f"{cache_key(agent_id, updated_at)}:{tts_model}:{voice}"


@dataclass(frozen=True, slots=True)
class GreetingAudio:
    key: str
    updated_at: float
    sample_rate: int
    pcm: bytes = field(repr=False)


def encode_greeting(audio: GreetingAudio) -> bytes:
    """The one format of a greeting slot (host tier ``g:``, Redis ``g:``): a JSON header
    line ``{key, updatedAt, sampleRate}``, then the raw PCM."""
    header = json.dumps({"key": audio.key, "updatedAt": audio.updated_at, "sampleRate": audio.sample_rate})
    return header.encode() + b"\n" + audio.pcm


def decode_greeting(value: bytes, key: str) -> GreetingAudio | None:
    """A greeting slot, if it holds the sound ``key`` names; ``ValueError``, ``KeyError`` or
    ``TypeError`` if it is not a greeting slot."""
    header_end = value.index(b"\n")
    header = json.loads(value[:header_end])
    if header["key"] != key:
        return None
    return GreetingAudio(key, float(header["updatedAt"]), int(header["sampleRate"]), value[header_end + 1 :])


class GreetingRam:
    """agent id -> its newest version's greeting audio, bounded in bytes (LRU)."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self._max_bytes = max_bytes
        self._entries: OrderedDict[str, GreetingAudio] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, agent_id: str, key: str) -> GreetingAudio | None:
        with self._lock:
            entry = self._entries.get(agent_id)
            if entry is None or entry.key != key:
                return None
            self._entries.move_to_end(agent_id)
            return entry

    def put(self, agent_id: str, audio: GreetingAudio) -> bool:
        """Hold ``audio`` unless the agent already has a newer version's or it is too large."""
        if len(audio.pcm) > min(MAX_GREETING_BYTES, self._max_bytes):
            return False
        with self._lock:
            held = self._entries.get(agent_id)
            if held is not None and held.updated_at > audio.updated_at:
                return False
            self._drop(agent_id)
            while self._entries and self._bytes + len(audio.pcm) > self._max_bytes:
                _, evicted = self._entries.popitem(last=False)
                self._bytes -= len(evicted.pcm)
            self._entries[agent_id] = audio
            self._bytes += len(audio.pcm)
            return True

    def discard(self, agent_id: str, *, older_than: float | None = None) -> None:
        """Drop the agent's greeting (only if from a version before ``older_than``, if given)."""
        with self._lock:
            held = self._entries.get(agent_id)
            if held is not None and (older_than is None or held.updated_at < older_than):
                self._drop(agent_id)

    def _drop(self, agent_id: str) -> None:
        held = self._entries.pop(agent_id, None)
        if held is not None:
            self._bytes -= len(held.pcm)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def audio_bytes(self) -> int:
        return self._bytes
