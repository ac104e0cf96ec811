"""The host tier as a job process sees it: read-only, from a memory map, never raising.

Reads are synchronous and cheap (a memory map, no I/O wait): safe to call from any
thread and any loop, and on the join's hit path, which has no awaits. Every read answers
"nothing" on error (logged, bounded): the host tier never fails a join. The owner
(``host_owner.py``) makes the same reads (:class:`HostTier`) through its own read-write
environment: one LMDB environment per process.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import lmdb
import structlog

from services.tiers.entry import TierEntry
from services.tiers.greeting import GreetingAudio, decode_greeting
from services.tiers.host_format import (
    HEARTBEAT_KEY,
    MAX_READERS,
    decode_prompt,
    get_json,
    greeting_slot,
    loading_key,
    prompt_key,
    prompt_prefix,
    version_key,
)

log = structlog.get_logger(__name__)
_T = TypeVar("_T")


class HostTier:
    """An open host tier, as its owner or a reader: the reads both make.

    Subclasses say where the environment comes from (:meth:`_environment`) and how it
    is closed.
    """

    def __init__(self, path: Path, *, clock: Callable[[], float]) -> None:
        self.path = path
        self._clock = clock
        self._closed = False
        self._failures_logged = 0

    def _environment(self) -> lmdb.Environment | None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def _read_failed(self, operation: str, exc: Exception) -> None:
        if self._failures_logged < 20:  # bounded: a broken map must not flood the log
            self._failures_logged += 1
            log.warning("host_tier_read_failed", operation=operation, error=type(exc).__name__, reason=str(exc)[:200])

    def _read(self, operation: str, read: Callable[[lmdb.Transaction], _T], failed: _T) -> _T:
        """``read`` in one read transaction; ``failed`` when the tier cannot be opened or
        what it holds does not decode (logged, bounded): a reader never raises."""
        env = self._environment()
        if env is None:
            return failed
        try:
            with env.begin() as txn:
                return read(txn)
        except (lmdb.Error, ValueError, KeyError, TypeError) as exc:
            self._read_failed(operation, exc)
            return failed

    def lookup(
        self, agent_id: str, hint: float | None, *, trust_seconds: float, fresh_seconds: float
    ) -> TierEntry | None:
        """The agent's current prompt if the tier can vouch for it: the version is the
        dispatch's hint or (while the owner's heartbeat is recent) the recorded one, and
        was confirmed less than ``fresh_seconds`` ago. One read transaction, no waiting."""

        def read(txn: lmdb.Transaction) -> TierEntry | None:
            beat = get_json(txn, HEARTBEAT_KEY)
            trusted = beat is not None and self._clock() - float(beat["at"]) < trust_seconds
            recorded = get_json(txn, version_key(agent_id)) if trusted else None
            version = hint
            if recorded is not None and (hint is None or float(recorded["u"]) >= hint):
                version = float(recorded["u"])
            if version is None:
                return None
            entry = get_json(txn, prompt_key(agent_id, version))
            return None if entry is None else decode_prompt(entry, version, recorded, beat)

        found = self._read("lookup", read, None)
        if found is None or self._clock() - found.vouched_at >= fresh_seconds:
            return None
        return found

    def newest(self, agent_id: str) -> tuple[float, TierEntry] | None:
        """The newest version held for the agent, trusted or not (for stale-if-error)."""

        def read(txn: lmdb.Transaction) -> tuple[float, TierEntry] | None:
            beat = get_json(txn, HEARTBEAT_KEY)
            recorded = get_json(txn, version_key(agent_id))
            prefix = prompt_prefix(agent_id)
            cursor = txn.cursor()
            best: tuple[float, dict[str, Any]] | None = None
            if cursor.set_range(prefix):
                for key, raw in cursor:
                    if not bytes(key).startswith(prefix):
                        break
                    entry = json.loads(bytes(raw))
                    version = float(entry["agent"]["updatedAt"])
                    if best is None or version > best[0]:
                        best = (version, entry)
            if best is None:
                return None
            return best[0], decode_prompt(best[1], best[0], recorded, beat)

        return self._read("newest", read, None)

    def warm(self) -> bool:
        """Read and decode one held prompt, discarding it: a job process forked from the
        worker's forkserver pays its copy-on-write faults and first-use costs along this
        read path in ``prewarm``, before its job, instead of during the job's first lookup.
        False if the tier holds no prompt yet (or cannot be read)."""

        def read(txn: lmdb.Transaction) -> bool:
            beat = get_json(txn, HEARTBEAT_KEY)
            cursor = txn.cursor()
            if not cursor.set_range(b"p:") or not bytes(cursor.key()).startswith(b"p:"):
                return False
            agent_id = bytes(cursor.key())[2:].rsplit(b":", 1)[0].decode()
            entry = json.loads(bytes(cursor.value()))
            recorded = get_json(txn, version_key(agent_id))
            decode_prompt(entry, float(entry["agent"]["updatedAt"]), recorded, beat)
            return True

        return self._read("warm", read, False)

    def greeting(self, agent_id: str, key: str) -> GreetingAudio | None:
        """The agent's greeting audio if the tier holds the one ``key`` names (one read)."""

        def read(txn: lmdb.Transaction) -> GreetingAudio | None:
            raw = txn.get(greeting_slot(agent_id))
            return None if raw is None else decode_greeting(bytes(raw), key)

        return self._read("greeting", read, None)

    def loading_since(self, agent_id: str) -> float | None:
        """When the owner started loading this agent, if it is loading it now."""

        def read(txn: lmdb.Transaction) -> float | None:
            data = get_json(txn, loading_key(agent_id))
            return None if data is None else float(data["since"])

        return self._read("loading", read, None)


class HostTierReader(HostTier):
    """The owner's environment, opened read-only (a job process, in prewarm)."""

    def __init__(self, path: Path, *, clock: Callable[[], float]) -> None:
        super().__init__(path, clock=clock)
        self._env: lmdb.Environment | None = None

    @classmethod
    def open(cls, path: Path, *, clock: Callable[[], float] = time.time) -> HostTierReader:
        """If the owner has not created the environment yet (a process prewarmed while the
        worker starts), the first read opens it."""
        tier = cls(path, clock=clock)
        tier._environment()
        return tier

    def _environment(self) -> lmdb.Environment | None:
        if self._env is None and not self._closed and (self.path / "data.mdb").exists():
            try:
                self._env = lmdb.open(
                    str(self.path), readonly=True, lock=True, max_readers=MAX_READERS, max_dbs=0, readahead=False
                )
            except lmdb.Error as exc:
                self._read_failed("open", exc)
        return None if self._closed else self._env

    def close(self) -> None:
        """Close the environment. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._env is not None:
            self._env.close()
