"""structlog over the standard library, so livekit-agents' own records share one format.

JSON lines in production; coloured, readable lines on a terminal. Call
:func:`configure_logging` once at start-up (the worker's ``main`` does), never at import.
"""

from __future__ import annotations

import hashlib
import logging
import sys

import structlog


def prompt_fingerprint(prompt: str) -> str:
    """What logs carry instead of a prompt: a short hash that still tells versions apart."""
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:12]


def configure_logging(*, json_logs: bool | None = None, level: int | str = logging.INFO) -> None:
    if json_logs is None:
        json_logs = not sys.stderr.isatty()
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if json_logs else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler()
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder()],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info if json_logs else structlog.processors.StackInfoRenderer(),
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level)
    logging.captureWarnings(True)  # Python warnings become records of the same stream
    # asyncio's DEBUG records ("Using selector: EpollSelector") are noise at any level.
    logging.getLogger("asyncio").setLevel(max(logging.INFO, root.level))
