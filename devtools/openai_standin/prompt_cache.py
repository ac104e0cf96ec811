"""OpenAI's prompt-caching rule, applied to token lists, with no I/O.

OpenAI reports ``prompt_tokens_details.cached_tokens`` when a request's prompt starts with a
prefix it has seen recently (routed by ``prompt_cache_key``): nothing below 1,024 tokens,
then the shared prefix rounded down to 1,024 + a multiple of 128. The stand-in has no BPE
tokenizer offline, so it counts tokens its own way (:func:`tokens`): each message contributes
a role marker, then every word and every punctuation mark is one token. That is close to
BPE for English prose (OpenAI's rule of thumb: ~0.75 words per token) and, above all,
deterministic, so tests can build prompts of a known token count.
"""

from __future__ import annotations

import re
from collections import OrderedDict

CACHE_MIN_TOKENS = 1024
CACHE_INCREMENT = 128
_KEYS = 512  # prompt_cache_keys remembered (least recently used goes first)
_PER_KEY = 8  # earlier prompts remembered per key
_WORD = re.compile(r"\w+|[^\w\s]")


def tokens(messages: list[tuple[str, str]]) -> list[str]:
    """The prompt as the stand-in counts it: ``<|role|>`` then the message's words and marks."""
    out: list[str] = []
    for role, text in messages:
        out.append(f"<|{role}|>")
        out.extend(_WORD.findall(text))
    return out


def cached_tokens(shared_prefix: int) -> int:
    """What OpenAI reports as cached for a prompt sharing ``shared_prefix`` tokens."""
    if shared_prefix < CACHE_MIN_TOKENS:
        return 0
    return CACHE_MIN_TOKENS + (shared_prefix - CACHE_MIN_TOKENS) // CACHE_INCREMENT * CACHE_INCREMENT


def _shared(a: list[str], b: list[str]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


class PromptCache:
    """Earlier prompts per ``prompt_cache_key``; a request without a key is never cached."""

    def __init__(self) -> None:
        self._seen: OrderedDict[str, list[list[str]]] = OrderedDict()

    def lookup_and_store(self, key: str | None, prompt: list[str]) -> int:
        """Cached tokens for ``prompt`` under ``key``; then remember it for later requests."""
        if not key:
            return 0
        earlier = self._seen.get(key, [])
        best = max((_shared(prompt, seen) for seen in earlier), default=0)
        self._seen[key] = [*earlier, prompt][-_PER_KEY:]
        self._seen.move_to_end(key)
        while len(self._seen) > _KEYS:
            self._seen.popitem(last=False)
        return cached_tokens(best)

    def clear(self) -> None:
        self._seen.clear()
