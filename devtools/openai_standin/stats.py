"""What the stand-in has served, for tests: counts per path and fingerprints, never text.

Prompts and spoken texts only ever appear here as SHA-256 digests, so a test can prove which
prompt or sentence reached the stand-in without the stats (or a log) carrying it. Transcripts
are the stand-in's own labels (phrase-book entries or ``utterance N (d s)``), not caller data.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

_KEEP = 200  # bounded lists: a long load test must not grow the stand-in without limit


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass
class Stats:
    requests: Counter[str] = field(default_factory=Counter)
    last_chat: dict[str, Any] | None = None
    chats: int = 0
    speech_inputs: list[str] = field(default_factory=list)
    transcripts: list[str] = field(default_factory=list)
    replies: list[str] = field(default_factory=list)
    cached_tokens: list[int] = field(default_factory=list)
    utterance_seq: int = 0
    sessions: Counter[str] = field(default_factory=Counter)

    def reset(self) -> None:
        """Back to zero: every field to its default."""
        fresh = Stats()
        self.__dict__.update(fresh.__dict__)

    def count(self, path: str) -> None:
        self.requests[path] += 1

    def chat(self, messages: list[tuple[str, str]], prompt_cache_key: str | None, cached: int) -> None:
        self.chats += 1
        self.last_chat = {
            "messages": [{"role": role, "sha256": sha256(text)} for role, text in messages],
            "prompt_cache_key": prompt_cache_key,
            "cached_tokens": cached,
        }
        _append(self.cached_tokens, cached)

    def session(self, intent: str) -> None:
        self.sessions[intent] += 1

    def speech(self, text: str) -> None:
        _append(self.speech_inputs, sha256(text))

    def transcript(self, text: str) -> None:
        _append(self.transcripts, text)

    def reply(self, text: str) -> None:
        _append(self.replies, text)

    def next_utterance(self) -> int:
        self.utterance_seq += 1
        return self.utterance_seq

    def snapshot(self) -> dict[str, Any]:
        return {
            "requests": dict(self.requests),
            "last_chat": self.last_chat,
            "chats": self.chats,
            "cached_tokens": list(self.cached_tokens),
            "speech_inputs": list(self.speech_inputs),
            "transcripts": list(self.transcripts),
            "replies": list(self.replies),
            "realtime_sessions": dict(self.sessions),
        }


def _append(items: list[Any], item: Any) -> None:
    items.append(item)
    del items[:-_KEEP]
