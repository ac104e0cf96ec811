"""One simulated worker host for ``bench.fleet``: the worker's main-process service
(AgentConfigService with its refresher, and the fleet when Redis is set), no LiveKit.

    CONVEX_URL=... CONVEX_DEPLOY_KEY=... [PROMPT_CACHE_REDIS_URL=...] \\
        .venv/bin/python -m bench.fleet_host --agents ID,ID,... [--resolve-interval 0.2]

Resolves every agent's prompt each ``--resolve-interval`` (from RAM once warm) and
prints one JSON line per event on stdout:

- ``{"ev": "ready", "pid": ...}`` once every agent resolved;
- ``{"ev": "seen", "agentId", "updatedAt", "marker", "t"}`` the first time a version is
  served (``marker``: the ``[edit <agent> <n>]`` tag in the prompt, or null);
- ``{"ev": "role", "role": "leader" | "follower" | null, "t"}`` on every role change;
- ``{"ev": "done", "resolves", "backwards", "ownPolls", "batchesApplied"}`` on SIGTERM
  (``backwards``: a fresh answer older than one already served, which must not happen).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import re
import signal
import sys
import time
from typing import Any

from services import AgentConfigError, AgentConfigService
from services.logging import configure_logging

MARKER = re.compile(r"\[edit (\S+) (\d+)\]")


def emit(event: str, **fields: Any) -> None:
    sys.stdout.write(json.dumps({"ev": event, **fields}) + "\n")
    sys.stdout.flush()


async def run(agents: list[str], interval: float) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    service = AgentConfigService.from_env(run_refresher=True)
    newest: dict[str, float] = {}
    resolves = backwards = 0
    role: str | None = "unknown"
    ready = False
    try:
        while not stop.is_set():
            fleet_stats = service.stats().fleet
            if (fleet_stats.role if fleet_stats else None) != role:
                role = fleet_stats.role if fleet_stats else None
                emit("role", role=role, t=time.time())
            for agent_id in agents:
                try:
                    result = await service.get_full_prompt(agent_id)
                except AgentConfigError as exc:
                    emit("error", agentId=agent_id, error=type(exc).__name__)
                    continue
                resolves += 1
                seen = newest.get(agent_id)
                if seen is not None and result.updated_at < seen and not result.stale:
                    backwards += 1
                if seen is None or result.updated_at > seen:
                    newest[agent_id] = result.updated_at
                    match = MARKER.search(result.prompt)
                    marker = int(match.group(2)) if match and match.group(1) == agent_id else None
                    emit("seen", agentId=agent_id, updatedAt=result.updated_at, marker=marker, t=time.time())
            if not ready:
                ready = True
                emit("ready", pid=os.getpid())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
    finally:
        fleet = service.stats().fleet
        emit(
            "done",
            resolves=resolves,
            backwards=backwards,
            ownPolls=fleet.own_polls if fleet else None,
            batchesApplied=fleet.batches_applied if fleet else None,
        )
        await service.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agents", required=True, help="comma-separated agent ids to resolve")
    parser.add_argument("--resolve-interval", type=float, default=0.2, help="seconds between rounds of resolves")
    args = parser.parse_args()
    configure_logging(json_logs=True, level=logging.WARNING)
    asyncio.run(run([a for a in args.agents.split(",") if a], args.resolve_interval))


if __name__ == "__main__":
    main()
