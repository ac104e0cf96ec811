"""Legacy agents: build the prompt on demand, and write it back to the store once.

An agent created before ``fullPrompt`` existed has none; the service builds it from
``prompts/`` and answers at once, while this module saves it with
``agents:savePrompt`` in the background: one write per agent version per process,
retried by a later build only if it failed. The store refuses a write for a version
that has been edited since, so a write-back never overwrites an edit.
"""

from __future__ import annotations

import asyncio

import structlog

from prompts import PromptBuildError, build_full_prompt, template_version
from services import metrics
from services.errors import ConfigUnavailableError, StoreError
from services.logging import prompt_fingerprint
from services.records import AgentRecord
from services.store.protocol import AgentStore
from services.tiers.ram_cache import LruDict

log = structlog.get_logger(__name__)

FLUSH_SECONDS = 5.0


class PromptWriteBack:
    """Owned by the service loop (its tasks live there)."""

    def __init__(self, store: AgentStore) -> None:
        self._store = store
        self._pending: dict[tuple[str, float], asyncio.Task[None]] = {}
        self._done: LruDict[tuple[str, float], bool] = LruDict(10_000)

    def build(self, record: AgentRecord) -> str:
        """The legacy agent's prompt, with its write-back started (once per version)."""
        try:
            prompt = build_full_prompt(record.as_document())
        except PromptBuildError as exc:
            raise ConfigUnavailableError(record.agent_id, f"legacy agent cannot be built: {exc}") from exc
        log.warning(
            "prompt_built_on_demand",
            message="⚠️ Agent missing fullPrompt field, building and saving to DB",
            agentId=record.agent_id,
            updatedAt=record.updated_at,
            promptHash=prompt_fingerprint(prompt),
        )
        key = (record.agent_id, record.updated_at)
        if key not in self._pending and key not in self._done:
            task = asyncio.get_running_loop().create_task(self._write(record, prompt))
            self._pending[key] = task
            task.add_done_callback(lambda _t: self._pending.pop(key, None))
        return prompt

    async def _write(self, record: AgentRecord, prompt: str) -> None:
        try:
            written = await self._store.save_prompt(record.agent_id, prompt, record.updated_at, template_version())
        except StoreError as exc:
            metrics.WRITEBACKS.labels(result="failed").inc()
            log.warning("prompt_writeback_failed", agentId=record.agent_id, error=str(exc))
            return  # not marked done: a later build may try again
        self._done[(record.agent_id, record.updated_at)] = True
        metrics.WRITEBACKS.labels(result="written" if written else "superseded").inc()
        log.info("prompt_written_back", agentId=record.agent_id, written=written, updatedAt=record.updated_at)

    async def flush(self) -> None:
        """Wait for pending write-backs (a process about to exit), at most ``FLUSH_SECONDS``."""
        pending = list(self._pending.values())
        if not pending:
            return
        _, not_done = await asyncio.wait(pending, timeout=FLUSH_SECONDS)
        if not_done:
            log.warning("writebacks_abandoned", count=len(not_done))
