"""``python -m agent start|dev``: the worker, with settings checked before anything starts.

livekit-agents exits with status 0 when LIVEKIT_URL is missing; a deployment must
notice, so missing or invalid settings exit with status 2 and one clear line.

Before the settings are read, ``.env.local`` then ``.env`` are loaded from the working
directory (as LiveKit's starter does); a variable already in the environment wins, and
``.env.local`` wins over ``.env``. This happens here, at the command line's entry, and
never when a module is imported.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import structlog
from dotenv import load_dotenv
from livekit.agents import cli
from livekit.agents.cli import cli as livekit_cli

from agent.server import build_server
from agent.settings import WorkerSettings, warn_renamed_settings
from services import ServiceSettings, SettingsError
from services.logging import configure_logging

ENV_FILES = (".env.local", ".env")
log = structlog.get_logger("agent.main")


def load_env_files(directory: Path) -> None:
    """Fill the environment from ``.env.local`` then ``.env``; set variables are kept."""
    for name in ENV_FILES:
        path = directory / name
        if path.is_file():
            load_dotenv(path, override=False)


def use_structlog_for_livekit(*, level: str, json_logs: bool | None) -> None:
    """Make livekit-agents' own logging set-up end in the project's one log stream.

    livekit's CLI calls ``setup_logging`` just before it creates the worker's loop (in
    ``dev`` and ``start``): it adds its own stdout handler, sets its loggers' levels and
    quiets noisy libraries. The replacement keeps its level work, with ``LOG_LEVEL``
    instead of ``--log-level``, then puts structlog's formatter on the root logger in
    place of livekit's, so its records (with their ``extra=`` fields) and the project's
    events come out through the same processors.
    """
    livekit_setup = livekit_cli.setup_logging  # type: ignore[attr-defined]  # imported there from .log

    def setup_logging(log_level: str, devmode: bool, console: bool, compact: bool = False) -> None:
        livekit_setup(level, devmode, console, compact)
        configure_logging(json_logs=json_logs, level=level)

    livekit_cli.setup_logging = setup_logging  # type: ignore[attr-defined]  # the name _run_worker calls


def main() -> int:
    load_env_files(Path.cwd())
    try:
        settings = WorkerSettings.from_env()
        ServiceSettings.from_env()  # fail now, not at the first job
    except SettingsError as exc:
        print(f"agent: {exc}", file=sys.stderr)
        return 2
    json_logs = None if settings.log_format == "auto" else settings.log_format == "json"
    # From here on, also for what building the server warns about and what livekit's CLI
    # logs before its own set-up (the "dev mode is deprecated" warning), and again once
    # livekit has set up its loggers.
    configure_logging(json_logs=json_logs, level=settings.log_level)
    use_structlog_for_livekit(level=settings.log_level, json_logs=json_logs)
    warn_renamed_settings(os.environ)
    server = build_server(settings)

    @server.on("worker_started")
    def _configured() -> None:
        log.info(
            "worker_configured",
            agentName=settings.agent_name,
            executor=settings.executor,
            logLevel=settings.log_level,
            logFormat=settings.log_format,
        )

    cli.run_app(server)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
