"""The embedded store: agents from a JSON file, for running without Convex.

The file has the local backend's seed format, ``{"agents": [documents...]}``, and
is re-read when its modification time changes, so editing it behaves like an edit in
Convex (bump ``updatedAt``). A document with ``deletedAt`` is a deleted agent (as after
``agents:remove``); a document that disappears from the file is deleted too, stamped
when the file was re-read. Either way the change feed reports it and workers drop it.
Documents without ``_id`` get the id the local backend gives the same file when seeded
(``convex-test`` numbering), so one demo id works with either store; such ids follow
the position in the file, so delete with ``deletedAt`` rather than by removing a document
in the middle. Write-backs are kept in memory: the file is the user's.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

from services.errors import StoreResponseError, StoreUnavailableError
from services.records import AgentRecord, parse_agent
from services.store.protocol import AgentVersion

_FIRST_LOCAL_ID = 10_000
_LOCAL_ID_LENGTH = 32


def local_backend_id(index: int, table: str = "agents") -> str:
    """The id convex-test assigns to the ``index``-th document it inserts."""
    return str(_FIRST_LOCAL_ID + index).rjust(_LOCAL_ID_LENGTH - len(table), "0") + table


class FileAgentStore:
    """Implements :class:`~services.store.protocol.AgentStore` over a JSON file."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._mtime: float | None = None
        self._docs: dict[str, dict[str, Any]] = {}
        self._saved: dict[tuple[str, float], str] = {}
        self._vanished: dict[str, float] = {}  # agent id -> when it left the file (ms)

    def _reload_if_changed(self) -> None:
        try:
            mtime = os.stat(self._path).st_mtime
        except OSError as exc:
            raise StoreUnavailableError(f"agents file {self._path}: {exc.strerror}") from exc
        if mtime == self._mtime:
            return
        try:
            data = json.loads(self._path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise StoreResponseError(f"agents file {self._path}: {exc}") from exc
        agents = data.get("agents") if isinstance(data, dict) else None
        if not isinstance(agents, list):
            raise StoreResponseError(f'agents file {self._path}: expected {{"agents": [...]}}')
        docs: dict[str, dict[str, Any]] = {}
        for index, doc in enumerate(agents):
            if not isinstance(doc, dict):
                raise StoreResponseError(f"agents file {self._path}: agent {index} is not an object")
            agent_id = doc.get("_id") or local_backend_id(index)
            docs[str(agent_id)] = {**doc, "_id": str(agent_id)}
        now_ms = time.time() * 1000.0
        for agent_id, old in self._docs.items():
            if agent_id not in docs and agent_id not in self._vanished:
                previous = old.get("updatedAt")
                floor = float(previous) + 1 if isinstance(previous, (int, float)) else now_ms
                self._vanished[agent_id] = max(now_ms, floor)
        for agent_id in docs:
            self._vanished.pop(agent_id, None)
        self._docs = docs
        self._mtime = mtime

    async def get_agent(self, agent_id: str) -> AgentRecord | None:
        self._reload_if_changed()
        doc = self._docs.get(agent_id)
        if doc is None or doc.get("deletedAt") is not None:
            return None
        saved = self._saved.get((agent_id, float(doc.get("updatedAt", 0))))
        if saved is not None and not doc.get("fullPrompt"):
            doc = {**doc, "fullPrompt": saved}
        return parse_agent(doc, agent_id)

    async def changed_since(self, since_ms: float, limit: int) -> list[AgentVersion]:
        self._reload_if_changed()
        rows = []
        for agent_id, doc in self._docs.items():
            updated_at = doc.get("updatedAt")
            if isinstance(updated_at, (int, float)) and updated_at >= since_ms:
                rows.append(AgentVersion(agent_id, float(updated_at), doc.get("deletedAt") is not None))
        gone = self._vanished.items()
        rows.extend(AgentVersion(agent_id, stamp, deleted=True) for agent_id, stamp in gone if stamp >= since_ms)
        rows.sort(key=lambda row: row.updated_at)
        return rows[:limit]

    async def save_prompt(
        self, agent_id: str, full_prompt: str, built_from_updated_at: float, template_version: int
    ) -> bool:
        await asyncio.sleep(0)
        doc = self._docs.get(agent_id)
        if doc is None or doc.get("deletedAt") is not None or float(doc.get("updatedAt", -1)) != built_from_updated_at:
            return False
        self._saved[(agent_id, built_from_updated_at)] = full_prompt
        return True

    async def aclose(self) -> None:
        self._docs.clear()
