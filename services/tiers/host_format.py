"""The host tier's format, shared by its owner and its readers.

The host tier: prompts shared by every process of one worker through LMDB, no server.

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

The owner (``host_owner.py``) and the readers (``host_reader.py``) are two classes; the
keys, the value codec and the trust rule they share live here.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import lmdb

from services.records import cache_key
from services.tiers.entry import TierEntry, decode_entry

DEFAULT_MAX_BYTES = 256 * 1024 * 1024
"""Bound on the prompt values the owner keeps (UTF-8 JSON); the map is twice that."""
MAX_READERS = 512
"""Reader slots: one per job process with the tier open (plus a few); dead ones are reclaimed."""
DEFAULT_MAX_GREETING_BYTES = 64 * 1024 * 1024
"""Bound on the greeting audio the owner keeps (inside the map's slack: see ``HostTierOwner.open``)."""
DEFAULT_DIR_PREFIX = "agent-host-tier-"
DATA_FILES = ("data.mdb", "lock.mdb")
HEARTBEAT_KEY = b"hb"


class HostTierError(Exception):
    """The host tier cannot be opened (the reason says why); the worker runs without it."""


def prompt_key(agent_id: str, version: float) -> bytes:
    return b"p:" + cache_key(agent_id, version).encode()


def prompt_prefix(agent_id: str) -> bytes:
    """What every ``p:`` key of the agent starts with."""
    return b"p:" + agent_id.encode() + b":"


def version_key(agent_id: str) -> bytes:
    return b"v:" + agent_id.encode()


def loading_key(agent_id: str) -> bytes:
    return b"l:" + agent_id.encode()


def greeting_slot(agent_id: str) -> bytes:
    return b"g:" + agent_id.encode()


def get_json(txn: lmdb.Transaction, key: bytes) -> dict[str, Any] | None:
    raw = txn.get(key)
    if raw is None:
        return None
    value = json.loads(bytes(raw))
    return value if isinstance(value, dict) else None


def encode_json(value: dict[str, Any]) -> bytes:
    return json.dumps(value).encode()


def decode_prompt(
    entry: dict[str, Any], version: float, recorded: dict[str, Any] | None, beat: dict[str, Any] | None
) -> TierEntry:
    """A ``p:`` value; confirmed by the ``v:`` record and the heartbeat if they name its version."""
    found = decode_entry(entry)
    confirmed = found.loaded_at
    if recorded is not None and float(recorded["u"]) == version:
        confirmed = max(confirmed, float(recorded["w"]), float(beat["at"]) if beat is not None else confirmed)
    return replace(found, confirmed_at=confirmed)


def encode_heartbeat(started_at: float, confirmed_at: float) -> bytes:
    return encode_json({"pid": os.getpid(), "since": started_at, "at": confirmed_at})


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
