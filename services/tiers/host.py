"""The host tier: prompts shared by every process of one worker through LMDB, no server.

Under livekit-agents' PROCESS executor each job is a fresh process with an empty RAM
tier. The worker's main process (the *owner*, the only writer) mirrors what its
service loads into an LMDB environment in ``PROMPT_HOST_CACHE_DIR``; job processes
open it read-only in prewarm and resolve a known agent from a memory map, with no
network round trip. Redis stays the tier between hosts, behind this one.

One database, four kinds of keys (values are JSON):

- ``p:<agentId>:<updatedAt>``: ``{prompt, agent, loadedAt}``; one version per agent
  (writing a newer one deletes the older), at most ``max_entries`` entries and
  ``max_bytes`` of values, the oldest written evicted first;
- ``v:<agentId>``: ``{u, w}``: the agent's current version as the owner knows it and
  when it was confirmed; only ever moved forward;
- ``l:<agentId>``: ``{since}``: the owner is loading this agent right now (a job
  process that misses waits for that load instead of reading the store itself);
- ``hb``: ``{pid, since, at}``: the owner's heartbeat, ``at`` being the start of its
  last successful change-feed poll (which confirmed every recorded version at once);
- ``g:<agentId>``: the greeting audio of the agent's newest version (``services.tiers.greeting``):
  a JSON header line ``{key, updatedAt, sampleRate}`` then raw PCM; at most
  ``max_greeting_bytes`` of them, the oldest written evicted first.

A reader trusts ``v:`` only while the heartbeat is recent; otherwise it asks like a
cold process (a version named by the dispatch still hits). Failures never fail a
join: every read answers "nothing" on error. Crash safety: readers never write; the
owner clears the reader slots of dead processes (``reader_check``) on every heartbeat,
and an owner starting on a directory removes what a previous worker left there.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import lmdb
import structlog

from services.records import AgentConfig, cache_key
from services.tiers.greeting import GreetingAudio

log = structlog.get_logger(__name__)
_T = TypeVar("_T")

DEFAULT_MAX_BYTES = 256 * 1024 * 1024
"""Bound on the prompt values the owner keeps (UTF-8 JSON); the map is twice that."""
MAX_READERS = 512
"""Reader slots: one per job process with the tier open (plus a few); dead ones are reclaimed."""
DEFAULT_MAX_GREETING_BYTES = 64 * 1024 * 1024
"""Bound on the greeting audio the owner keeps (inside the map's slack: see ``open_owner``)."""
DEFAULT_DIR_PREFIX = "agent-host-tier-"
_DATA_FILES = ("data.mdb", "lock.mdb")
_HEARTBEAT = b"hb"


class HostTierError(Exception):
    """The host tier cannot be opened (the reason says why); the worker runs without it."""


@dataclass(frozen=True, slots=True)
class HostPrompt:
    """A prompt the host tier holds. ``confirmed_at``: when the owner last vouched that
    this version was current (``loaded_at`` if it never did)."""

    prompt: str
    agent: AgentConfig
    loaded_at: float
    confirmed_at: float


@dataclass(frozen=True, slots=True)
class Heartbeat:
    pid: int
    since: float
    at: float


def _prompt_key(agent_id: str, version: float) -> bytes:
    return b"p:" + cache_key(agent_id, version).encode()


def _version_key(agent_id: str) -> bytes:
    return b"v:" + agent_id.encode()


def _loading_key(agent_id: str) -> bytes:
    return b"l:" + agent_id.encode()


def _greeting_key(agent_id: str) -> bytes:
    return b"g:" + agent_id.encode()


class HostTier:
    """An open LMDB environment, as its owner (read-write) or as a reader.

    Build with :meth:`open_owner` (the worker's main process) or :meth:`open_reader`
    (job processes). Reads are synchronous and cheap (a memory map, no I/O wait):
    safe to call from any thread and any loop. Writes come from one thread.
    """

    def __init__(
        self,
        env: lmdb.Environment | None,
        path: Path,
        *,
        owner: bool,
        max_entries: int,
        max_bytes: int,
        clock: Callable[[], float],
        lock_file: BinaryIO | None = None,
    ) -> None:
        self._env = env
        self.path = path
        self.owner = owner
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self._clock = clock
        self._lock_file = lock_file
        self._started_at = clock()
        # Owner only: what it wrote, oldest first, for eviction; agent -> its version held.
        self._sizes: OrderedDict[bytes, int] = OrderedDict()
        self._held: dict[str, float] = {}
        self._bytes = 0
        self._greetings: OrderedDict[str, int] = OrderedDict()  # owner: agent -> greeting value size
        self._greeting_bytes = 0
        self._max_greeting_bytes = DEFAULT_MAX_GREETING_BYTES
        self._closed = False
        self._failures_logged = 0

    # ------------------------------------------------------------------ opening

    @classmethod
    def open_owner(
        cls,
        path: Path,
        *,
        max_entries: int,
        max_bytes: int = DEFAULT_MAX_BYTES,
        clock: Callable[[], float] = time.time,
    ) -> HostTier:
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
            for name in _DATA_FILES:  # start clean; readers of the old files keep their own inode
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
        tier = cls(
            env, path, owner=True, max_entries=max_entries, max_bytes=max_bytes, clock=clock, lock_file=lock_file
        )
        tier.heartbeat(tier._started_at)
        return tier

    @classmethod
    def open_reader(cls, path: Path, *, clock: Callable[[], float] = time.time) -> HostTier:
        """Open the owner's environment read-only (a job process, in prewarm). If the owner
        has not created it yet (a process prewarmed while the worker starts), the first
        read opens it."""
        tier = cls(None, path, owner=False, max_entries=0, max_bytes=0, clock=clock)
        tier._reader_env()
        return tier

    def _reader_env(self) -> lmdb.Environment | None:
        if self._closed:
            return None
        if self._env is None and not self._closed and (self.path / "data.mdb").exists():
            try:
                self._env = lmdb.open(
                    str(self.path), readonly=True, lock=True, max_readers=MAX_READERS, max_dbs=0, readahead=False
                )
            except lmdb.Error as exc:
                self._read_failed("open", exc)
        return self._env

    @property
    def is_open(self) -> bool:
        return self._env is not None and not self._closed

    def close(self) -> None:
        """Close the environment (and, for the owner, release the directory). Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._env is not None:
            self._env.close()
        if self._lock_file is not None:
            self._lock_file.close()

    # ------------------------------------------------------------------ reads (any process)

    def _read_failed(self, operation: str, exc: Exception) -> None:
        if self._failures_logged < 20:  # bounded: a broken map must not flood the log
            self._failures_logged += 1
            log.warning("host_tier_read_failed", operation=operation, error=type(exc).__name__, reason=str(exc)[:200])

    def _get_json(self, txn: lmdb.Transaction, key: bytes) -> dict[str, Any] | None:
        raw = txn.get(key)
        if raw is None:
            return None
        value = json.loads(bytes(raw))
        return value if isinstance(value, dict) else None

    def _read(self, operation: str, read: Callable[[lmdb.Transaction], _T], failed: _T) -> _T:
        """``read`` in one read transaction; ``failed`` when the tier cannot be opened or
        what it holds does not decode (logged, bounded): a reader never raises."""
        env = self._reader_env()
        if env is None:
            return failed
        try:
            with env.begin() as txn:
                return read(txn)
        except (lmdb.Error, ValueError, KeyError, TypeError) as exc:
            self._read_failed(operation, exc)
            return failed

    def heartbeat_info(self) -> Heartbeat | None:
        def read(txn: lmdb.Transaction) -> Heartbeat | None:
            data = self._get_json(txn, _HEARTBEAT)
            return None if data is None else Heartbeat(int(data["pid"]), float(data["since"]), float(data["at"]))

        return self._read("heartbeat", read, None)

    def lookup(
        self, agent_id: str, hint: float | None, *, trust_seconds: float, fresh_seconds: float
    ) -> HostPrompt | None:
        """The agent's current prompt if the tier can vouch for it: the version is the
        dispatch's hint or (while the owner's heartbeat is recent) the recorded one, and
        was confirmed less than ``fresh_seconds`` ago. One read transaction, no waiting."""

        def read(txn: lmdb.Transaction) -> HostPrompt | None:
            beat = self._get_json(txn, _HEARTBEAT)
            trusted = beat is not None and self._clock() - float(beat["at"]) < trust_seconds
            recorded = self._get_json(txn, _version_key(agent_id)) if trusted else None
            version = hint
            if recorded is not None and (hint is None or float(recorded["u"]) >= hint):
                version = float(recorded["u"])
            if version is None:
                return None
            entry = self._get_json(txn, _prompt_key(agent_id, version))
            return None if entry is None else self._entry(entry, version, recorded, beat)

        found = self._read("lookup", read, None)
        if found is None or self._clock() - max(found.loaded_at, found.confirmed_at) >= fresh_seconds:
            return None
        return found

    def newest(self, agent_id: str) -> tuple[float, HostPrompt] | None:
        """The newest version held for the agent, trusted or not (for stale-if-error)."""

        def read(txn: lmdb.Transaction) -> tuple[float, HostPrompt] | None:
            beat = self._get_json(txn, _HEARTBEAT)
            recorded = self._get_json(txn, _version_key(agent_id))
            prefix = b"p:" + agent_id.encode() + b":"
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
            return best[0], self._entry(best[1], best[0], recorded, beat)

        return self._read("newest", read, None)

    def warm(self) -> bool:
        """Read and decode one held prompt, discarding it: a job process forked from the
        worker's forkserver pays its copy-on-write faults and first-use costs along this
        read path in ``prewarm``, before its job, instead of during the job's first lookup.
        False if the tier holds no prompt yet (or cannot be read)."""

        def read(txn: lmdb.Transaction) -> bool:
            beat = self._get_json(txn, _HEARTBEAT)
            cursor = txn.cursor()
            if not cursor.set_range(b"p:") or not bytes(cursor.key()).startswith(b"p:"):
                return False
            agent_id = bytes(cursor.key())[2:].rsplit(b":", 1)[0].decode()
            entry = json.loads(bytes(cursor.value()))
            recorded = self._get_json(txn, _version_key(agent_id))
            self._entry(entry, float(entry["agent"]["updatedAt"]), recorded, beat)
            return True

        return self._read("warm", read, False)

    def greeting(self, agent_id: str, key: str) -> GreetingAudio | None:
        """The agent's greeting audio if the tier holds the one ``key`` names (one read)."""

        def read(txn: lmdb.Transaction) -> GreetingAudio | None:
            raw = txn.get(_greeting_key(agent_id))
            if raw is None:
                return None
            value = bytes(raw)
            header_end = value.index(b"\n")
            header = json.loads(value[:header_end])
            if header["key"] != key:
                return None
            return GreetingAudio(key, float(header["updatedAt"]), int(header["sampleRate"]), value[header_end + 1 :])

        return self._read("greeting", read, None)

    def loading_since(self, agent_id: str) -> float | None:
        """When the owner started loading this agent, if it is loading it now."""

        def read(txn: lmdb.Transaction) -> float | None:
            data = self._get_json(txn, _loading_key(agent_id))
            return None if data is None else float(data["since"])

        return self._read("loading", read, None)

    @staticmethod
    def _entry(
        entry: dict[str, Any], version: float, recorded: dict[str, Any] | None, beat: dict[str, Any] | None
    ) -> HostPrompt:
        loaded_at = float(entry["loadedAt"])
        confirmed = loaded_at
        if recorded is not None and float(recorded["u"]) == version:
            confirmed = max(confirmed, float(recorded["w"]), float(beat["at"]) if beat is not None else confirmed)
        return HostPrompt(str(entry["prompt"]), AgentConfig.from_json(entry["agent"]), loaded_at, confirmed)

    # ------------------------------------------------------------------ writes (owner only)

    @contextlib.contextmanager
    def _write(self, operation: str) -> Iterator[lmdb.Transaction | None]:
        """A write transaction; a failure is logged and dropped (the tier is a cache)."""
        if not self.owner:
            raise PermissionError("only the worker's main process writes the host tier")
        if self._closed or self._env is None:
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
        if self._env is None:
            return
        with contextlib.suppress(lmdb.Error), self._env.begin(write=True) as txn:
            txn.drop(self._env.open_db(txn=txn), delete=False)
            beat = {"pid": os.getpid(), "since": self._started_at, "at": float("-inf")}
            txn.put(_HEARTBEAT, json.dumps(beat).encode())

    def put_prompt(self, agent: AgentConfig, prompt: str, loaded_at: float) -> None:
        """Hold this version (dropping the agent's older one), record it as current, end
        the agent's loading mark, and evict the oldest entries beyond the bounds."""
        key = _prompt_key(agent.agent_id, agent.updated_at)
        value = json.dumps({"prompt": prompt, "agent": agent.to_json(), "loadedAt": loaded_at}).encode()
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
                self._forget(txn, _prompt_key(agent.agent_id, previous))
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
            txn.delete(_loading_key(agent.agent_id))

    def put_greeting(self, agent_id: str, audio: GreetingAudio) -> None:
        """Hold the agent's greeting audio (replacing any other), the oldest evicted past the bound."""
        header = json.dumps({"key": audio.key, "updatedAt": audio.updated_at, "sampleRate": audio.sample_rate})
        value = header.encode() + b"\n" + audio.pcm
        if len(value) > self._max_greeting_bytes:
            return
        with self._write("put_greeting") as txn:
            if txn is None:
                return
            self._forget_greeting(txn, agent_id)
            while self._greetings and self._greeting_bytes + len(value) > self._max_greeting_bytes:
                self._forget_greeting(txn, next(iter(self._greetings)))
            txn.put(_greeting_key(agent_id), value)
            self._greetings[agent_id] = len(value)
            self._greeting_bytes += len(value)

    def _forget_greeting(self, txn: lmdb.Transaction, agent_id: str) -> None:
        size = self._greetings.pop(agent_id, None)
        if size is not None:
            self._greeting_bytes -= size
        txn.delete(_greeting_key(agent_id))

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
        key = _version_key(agent_id)
        raw = txn.get(key)
        if raw is not None:
            current = json.loads(bytes(raw))
            if float(current["u"]) > updated_at:
                return
            if float(current["u"]) == updated_at:
                confirmed_at = max(confirmed_at, float(current["w"]))
        txn.put(key, json.dumps({"u": updated_at, "w": confirmed_at}).encode())

    def forget_agent(self, agent_id: str) -> None:
        """A deleted agent: its prompts, version and loading mark leave the tier, so no job
        process finds it here again (not even to serve it stale)."""
        prefix = b"p:" + agent_id.encode() + b":"
        with self._write("forget_agent") as txn:
            if txn is None:
                return
            for key in [key for key in self._sizes if key.startswith(prefix)]:
                self._forget(txn, key)
            self._held.pop(agent_id, None)
            self._forget_greeting(txn, agent_id)
            txn.delete(_version_key(agent_id))
            txn.delete(_loading_key(agent_id))

    def mark_loading(self, agent_id: str, loading: bool) -> None:
        with self._write("mark_loading") as txn:
            if txn is None:
                return
            if loading:
                txn.put(_loading_key(agent_id), json.dumps({"since": self._clock()}).encode())
            else:
                txn.delete(_loading_key(agent_id))

    def heartbeat(self, confirmed_at: float) -> None:
        """Every recorded version was current at ``confirmed_at`` (a successful poll began
        then); also clears the reader slots of dead job processes."""
        with self._write("heartbeat") as txn:
            if txn is not None:
                beat = {"pid": os.getpid(), "since": self._started_at, "at": confirmed_at}
                txn.put(_HEARTBEAT, json.dumps(beat).encode())
        self.reader_check()

    def reader_check(self) -> int:
        """Reclaim reader slots left by processes that died holding one; how many."""
        if self._closed or self._env is None:
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


# ---------------------------------------------------------------------- the default directory


def default_directory() -> Path:
    """A new per-worker directory under the system temp dir (removed at worker exit);
    directories left by workers that died without cleaning up are removed first."""
    root = Path(tempfile.gettempdir())
    for stale in root.glob(f"{DEFAULT_DIR_PREFIX}*"):
        pid = stale.name.removeprefix(DEFAULT_DIR_PREFIX).split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"{DEFAULT_DIR_PREFIX}{os.getpid()}-"))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
