"""The production session's local models, loaded into the process before any job.

The session (``agent.sessions.openai``) runs the Silero VAD and the ``v1-mini``
end-of-turn model of livekit-local-inference on this host.
"""

from __future__ import annotations

import time

import structlog
from livekit.local_inference import init_eot, init_vad

log = structlog.get_logger(__name__)
_local_models_loaded = False


def load_local_models() -> None:
    """Load the local VAD and end-of-turn weights into this process, once, before any job.

    Both are process-wide singletons of livekit-local-inference (the end-of-turn model is
    about 250 MB of RSS). livekit-agents would load them lazily in the first session, or in
    its own preload where it runs; loading them here, in ``prewarm`` and in the PROCESS
    forkserver (``agent.prewarm.forkserver``), keeps that cost off the first caller's path and
    says in this code that the session runs them."""
    global _local_models_loaded  # noqa: PLW0603 - a process-wide fact, like the singletons
    if _local_models_loaded:
        return
    started = time.perf_counter()
    init_vad()
    init_eot()
    _local_models_loaded = True
    log.info("local_models_loaded", models=["silero-vad", "turn-detector-v1-mini"],
             seconds=round(time.perf_counter() - started, 3))  # fmt: skip
