"""``python -m agent start|dev``: the worker, with settings checked before anything starts.

livekit-agents exits with status 0 when LIVEKIT_URL is missing; a deployment must
notice, so missing or invalid settings exit with status 2 and one clear line.
"""

from __future__ import annotations

import logging
import sys

from livekit.agents import cli

from agent.settings import WorkerSettings
from agent.worker import build_server
from services import ServiceSettings, SettingsError
from services.logging import configure_logging


def main() -> int:
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    try:
        settings = WorkerSettings.from_env()
        ServiceSettings.from_env()  # fail now, not at the first job
    except SettingsError as exc:
        print(f"agent: {exc}", file=sys.stderr)
        return 2
    server = build_server(settings)

    json_logs = None if settings.log_format == "auto" else settings.log_format == "json"

    @server.on("worker_started")
    def _use_structlog() -> None:
        # livekit-agents installs its own handlers while starting; route everything,
        # its records included, through structlog's formatter from here on.
        configure_logging(json_logs=json_logs if command != "dev" else False, level=logging.INFO)

    cli.run_app(server)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
