"""The host tier's owner: the worker's main process, its only writer.

It mirrors what its service loads (prompts, versions, greeting audio), marks the agents
it is loading, and heartbeats on every change-feed poll. It claims its directory with an
exclusive lock (a second owner is refused) and starts on it clean. Writes come from one
thread (the service loop); a failed write is logged and dropped (the tier is a cache),
and the bookkeeping is reset with the map. The owner reads through its own environment
(its reads are :class:`HostTier`'s): one LMDB environment per process.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import lmdb
import structlog

from services.records import AgentConfig
from services.tiers.entry import encode_entry
from services.tiers.greeting import GreetingAudio, encode_greeting
from services.tiers.host_format import (
    DATA_FILES,
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_GREETING_BYTES,
    HEARTBEAT_KEY,
    MAX_READERS,
    HostTierError,
    encode_heartbeat,
    encode_json,
    greeting_slot,
    loading_key,
    prompt_key,
    prompt_prefix,
    version_key,
)
from services.tiers.host_reader import HostTier

log = structlog.get_logger(__name__)


class HostTierOwner(HostTier):
    def __init__(
        self,
        env: lmdb.Environment,
        path: Path,
        *,
        max_entries: int,
        max_bytes: int,
        clock: Callable[[], float],
        lock_file: BinaryIO,
    ) -> None:
        super().__init__(path, clock=clock)
        self._env = env
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self._lock_file = lock_file
        self._started_at = clock()
        # What it wrote, oldest first, for eviction; agent -> its version held.
        self._sizes: OrderedDict[bytes, int] = OrderedDict()
        self._held: dict[str, float] = {}
        self._bytes = 0
        self._greetings: OrderedDict[str, int] = OrderedDict()  # agent -> greeting value size
        self._greeting_bytes = 0
        self._max_greeting_bytes = DEFAULT_MAX_GREETING_BYTES

    @classmethod
    def open(
        cls,
        path: Path,
        *,
        max_entries: int,
        max_bytes: int = DEFAULT_MAX_BYTES,
        clock: Callable[[], float] = time.time,
    ) -> HostTierOwner:
        """Create the environment afresh (whatever a previous worker left is removed) and
        claim it: a second owner on the same directory gets :class:`HostTierError`."""
        try:
            path.mkdir(parents=True, exist_ok=True)
            lock_file = (path / "owner.lock").open("a+b")
        except OSError as exc:
            raise HostTierError(f"cannot create {path}: {exc.strerror or exc}") from exc
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock_file.close()
            raise HostTierError(f"{path} is owned by another running worker") from None
        try:
            for name in DATA_FILES:  # start clean; readers of the old files keep their own inode
                (path / name).unlink(missing_ok=True)
            env = lmdb.open(
                str(path),
                map_size=2 * (max_bytes + DEFAULT_MAX_GREETING_BYTES) + 16 * 1024 * 1024,
                max_readers=MAX_READERS,
                max_dbs=0,
                sync=False,  # a cache: an OS crash may lose it, a process crash cannot
                metasync=False,
                readahead=False,
            )
        except (OSError, lmdb.Error) as exc:
            lock_file.close()
            raise HostTierError(f"cannot open {path} for writing: {exc}") from exc
        tier = cls(env, path, max_entries=max_entries, max_bytes=max_bytes, clock=clock, lock_file=lock_file)
        tier.heartbeat(tier._started_at)
        return tier

    def _environment(self) -> lmdb.Environment | None:
        return None if self._closed else self._env

    def close(self) -> None:
        """Close the environment and release the directory. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._env.close()
        self._lock_file.close()

    @contextlib.contextmanager
    def _write(self, operation: str) -> Iterator[lmdb.Transaction | None]:
        """A write transaction; a failure is logged and dropped (the tier is a cache)."""
        if self._closed:
            yield None
            return
        try:
            with self._env.begin(write=True) as txn:
                yield txn
        except lmdb.Error as exc:
            log.warning("host_tier_write_failed", operation=operation, error=type(exc).__name__, reason=str(exc)[:200])
            self._reset()

    def _reset(self) -> None:
        """After a failed write the bookkeeping may not match the map: empty both."""
        self._sizes.clear()
        self._held.clear()
        self._bytes = 0
        self._greetings.clear()
        self._greeting_bytes = 0
        with contextlib.suppress(lmdb.Error), self._env.begin(write=True) as txn:
            txn.drop(self._env.open_db(txn=txn), delete=False)
            txn.put(HEARTBEAT_KEY, encode_heartbeat(self._started_at, float("-inf")))

    def put_prompt(self, agent: AgentConfig, prompt: str, loaded_at: float) -> None:
        """Hold this version (dropping the agent's older one), record it as current, end
        the agent's loading mark, and evict the oldest entries beyond the bounds."""
        key = prompt_key(agent.agent_id, agent.updated_at)
        value = encode_entry(agent, prompt, loaded_at)
        if len(value) > self._max_bytes:
            log.warning("host_tier_entry_too_large", agentId=agent.agent_id, bytes=len(value))
            return
        previous = self._held.get(agent.agent_id)
        if previous is not None and previous > agent.updated_at:
            return  # never replace a newer version with an older one
        with self._write("put_prompt") as txn:
            if txn is None:
                return
            if previous is not None and previous != agent.updated_at:
                self._forget(txn, prompt_key(agent.agent_id, previous))
                self._forget_greeting(txn, agent.agent_id)  # the older version's sound
            self._forget(txn, key)
            while self._sizes and (len(self._sizes) >= self._max_entries or self._bytes + len(value) > self._max_bytes):
                oldest = next(iter(self._sizes))
                self._forget(txn, oldest)
                self._held.pop(oldest[2:].decode().rsplit(":", 1)[0], None)
            txn.put(key, value)
            self._sizes[key] = len(value)
            self._bytes += len(value)
            self._held[agent.agent_id] = agent.updated_at
            self._put_version(txn, agent.agent_id, agent.updated_at, loaded_at)
            txn.delete(loading_key(agent.agent_id))

    def put_greeting(self, agent_id: str, audio: GreetingAudio) -> None:
        """Hold the agent's greeting audio (replacing any other), the oldest evicted past the bound."""
        value = encode_greeting(audio)
        if len(value) > self._max_greeting_bytes:
            return
        with self._write("put_greeting") as txn:
            if txn is None:
                return
            self._forget_greeting(txn, agent_id)
            while self._greetings and self._greeting_bytes + len(value) > self._max_greeting_bytes:
                self._forget_greeting(txn, next(iter(self._greetings)))
            txn.put(greeting_slot(agent_id), value)
            self._greetings[agent_id] = len(value)
            self._greeting_bytes += len(value)

    def _forget_greeting(self, txn: lmdb.Transaction, agent_id: str) -> None:
        size = self._greetings.pop(agent_id, None)
        if size is not None:
            self._greeting_bytes -= size
        txn.delete(greeting_slot(agent_id))

    def _forget(self, txn: lmdb.Transaction, key: bytes) -> None:
        size = self._sizes.pop(key, None)
        if size is not None:
            self._bytes -= size
            txn.delete(key)

    def record_version(self, agent_id: str, updated_at: float, confirmed_at: float) -> None:
        """The agent's current version (forward only), e.g. from the change feed."""
        with self._write("record_version") as txn:
            if txn is not None:
                self._put_version(txn, agent_id, updated_at, confirmed_at)

    def _put_version(self, txn: lmdb.Transaction, agent_id: str, updated_at: float, confirmed_at: float) -> None:
        key = version_key(agent_id)
        raw = txn.get(key)
        if raw is not None:
            current = json.loads(bytes(raw))
            if float(current["u"]) > updated_at:
                return
            if float(current["u"]) == updated_at:
                confirmed_at = max(confirmed_at, float(current["w"]))
        txn.put(key, encode_json({"u": updated_at, "w": confirmed_at}))

    def forget_agent(self, agent_id: str) -> None:
        """A deleted agent: its prompts, version and loading mark leave the tier, so no job
        process finds it here again (not even to serve it stale)."""
        prefix = prompt_prefix(agent_id)
        with self._write("forget_agent") as txn:
            if txn is None:
                return
            for key in [key for key in self._sizes if key.startswith(prefix)]:
                self._forget(txn, key)
            self._held.pop(agent_id, None)
            self._forget_greeting(txn, agent_id)
            txn.delete(version_key(agent_id))
            txn.delete(loading_key(agent_id))

    def mark_loading(self, agent_id: str, loading: bool) -> None:
        with self._write("mark_loading") as txn:
            if txn is None:
                return
            if loading:
                txn.put(loading_key(agent_id), encode_json({"since": self._clock()}))
            else:
                txn.delete(loading_key(agent_id))

    def heartbeat(self, confirmed_at: float) -> None:
        """Every recorded version was current at ``confirmed_at`` (a successful poll began
        then); also clears the reader slots of dead job processes."""
        with self._write("heartbeat") as txn:
            if txn is not None:
                txn.put(HEARTBEAT_KEY, encode_heartbeat(self._started_at, confirmed_at))
        self.reader_check()

    def reader_check(self) -> int:
        """Reclaim reader slots left by processes that died holding one; how many."""
        if self._closed:
            return 0
        try:
            cleared: int = self._env.reader_check()
        except lmdb.Error as exc:
            log.warning("host_tier_reader_check_failed", error=type(exc).__name__, reason=str(exc)[:200])
            return 0
        if cleared:
            log.info("host_tier_readers_reclaimed", count=cleared)
        return cleared

    @property
    def entries(self) -> int:
        return len(self._sizes)

    @property
    def value_bytes(self) -> int:
        return self._bytes
