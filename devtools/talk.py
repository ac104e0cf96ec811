"""``python -m devtools.talk [--port P]``: talk to your agent in a browser, offline.

Serves the talk page (``devtools/talk_page/``, its script bundled from npm's
``livekit-client`` into ``web/dist`` by ``make web``: no CDN) and a small JSON API:

    GET  /api/agents                 the agents (embedded file, or Convex with CONVEX_URL)
    POST /api/calls {"agentId": ..}  a room, the caller's join token, the agent dispatched
    GET  /api/calls/<room>           dispatching | ready | failed | ended
    POST /api/calls/<room>/hangup    the room is closed, which ends the agent's job

LiveKit is reached with LIVEKIT_URL / LIVEKIT_API_KEY / LIVEKIT_API_SECRET (default: the
``livekit-server --dev`` that ``make worker`` starts) and the agent dispatched by name
AGENT_NAME (default: the name ``make worker`` gives its worker). The secret stays here:
the page only ever gets a token for its own room. Prints ``talk http://127.0.0.1:P/`` once
it listens; SIGTERM or Ctrl-C ends the calls it started and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from pathlib import Path

import structlog
from aiohttp import web

from devtools.devstack import DEV_AGENT_NAME
from devtools.processes import DEMO_SEED, LIVEKIT_DEV_KEY, LIVEKIT_DEV_SECRET, REPO
from devtools.talk_calls import CallError, Calls, LiveKitAccess
from services.errors import StoreError
from services.logging import configure_logging
from services.settings import ServiceSettings
from services.store.factory import default_store_factory

log = structlog.get_logger(__name__)

PAGE_DIR = REPO / "devtools" / "talk_page"
BUNDLE_DIR = REPO / "web" / "dist"
MAX_BODY_BYTES = 4096
"""A call request is one small JSON object."""
_CALLS: web.AppKey[Calls] = web.AppKey("calls", Calls)


def access_from_env(env: dict[str, str] | None = None) -> LiveKitAccess:
    env = dict(os.environ) if env is None else env
    return LiveKitAccess(
        url=env.get("LIVEKIT_URL") or "ws://127.0.0.1:7880",
        api_key=env.get("LIVEKIT_API_KEY") or LIVEKIT_DEV_KEY,
        api_secret=env.get("LIVEKIT_API_SECRET") or LIVEKIT_DEV_SECRET,
        agent_name=env.get("AGENT_NAME") or DEV_AGENT_NAME,
    )


def _error(exc: CallError) -> web.Response:
    return web.json_response({"error": str(exc)}, status=exc.status)


def _static(path: Path, content_type: str) -> web.StreamResponse:
    if not path.is_file():
        text = f"{path.name} is missing: run `make web` (it bundles the page's script)"
        return web.Response(status=503, text=text)
    return web.FileResponse(path, headers={"Content-Type": content_type, "Cache-Control": "no-store"})


def build_app(calls: Calls) -> web.Application:
    """The page, its assets and the API, around ``calls``."""
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app[_CALLS] = calls

    async def index(_: web.Request) -> web.StreamResponse:
        return _static(PAGE_DIR / "index.html", "text/html; charset=utf-8")

    async def css(_: web.Request) -> web.StreamResponse:
        return _static(PAGE_DIR / "talk.css", "text/css; charset=utf-8")

    async def script(_: web.Request) -> web.StreamResponse:
        return _static(BUNDLE_DIR / "talk.js", "text/javascript; charset=utf-8")

    async def script_map(_: web.Request) -> web.StreamResponse:
        return _static(BUNDLE_DIR / "talk.js.map", "application/json")

    async def agents(_: web.Request) -> web.Response:
        try:
            return web.json_response({"agents": await calls.agents()})
        except StoreError as exc:
            log.warning("talk_agents_unavailable", error=str(exc)[:300])
            return web.json_response({"error": f"agents cannot be read: {exc}"}, status=503)

    async def start_call(request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError):
            return web.json_response({"error": 'expected a JSON body {"agentId": "..."}'}, status=400)
        agent_id = body.get("agentId") if isinstance(body, dict) else None
        try:
            return web.json_response(await calls.start(agent_id))
        except CallError as exc:
            log.warning("talk_call_refused", status=exc.status, error=str(exc)[:300])
            return _error(exc)

    async def call_status(request: web.Request) -> web.Response:
        try:
            return web.json_response(calls.status(request.match_info["room"]))
        except CallError as exc:
            return _error(exc)

    async def hang_up(request: web.Request) -> web.Response:
        try:
            await calls.hang_up(request.match_info["room"])
        except CallError as exc:
            return _error(exc)
        return web.json_response({"status": "ended"})

    app.add_routes(
        [
            web.get("/", index),
            web.get("/talk.css", css),
            web.get("/talk.js", script),
            web.get("/talk.js.map", script_map),
            web.get("/api/agents", agents),
            web.post("/api/calls", start_call),
            web.get("/api/calls/{room}", call_status),
            web.post("/api/calls/{room}/hangup", hang_up),
        ]
    )
    return app


async def serve(port: int, host: str = "127.0.0.1") -> None:
    """Serve until SIGTERM or SIGINT, then end the calls this server started."""
    settings = ServiceSettings.from_env()
    store = default_store_factory(settings)()
    calls = Calls(access_from_env(), store)
    runner = web.AppRunner(build_app(calls), handle_signals=False, access_log=None)
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound = runner.addresses[0][1]
        source = "Convex " + settings.convex_url if settings.convex_url else f"agents file {settings.agents_file}"
        print(f"talk: agents from {source}; LiveKit at {calls.livekit_url}", flush=True)
        print(f"talk http://{host}:{bound}/", flush=True)
        await stop.wait()
    finally:
        await calls.aclose()
        await store.aclose()
        await runner.cleanup()
        log.info("talk_stopped")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=8790, help="0: any free port (default 8790)")
    args = parser.parse_args(argv)
    configure_logging(json_logs=os.environ.get("LOG_FORMAT") == "json")
    if not os.environ.get("CONVEX_URL") and not os.environ.get("AGENTS_FILE"):
        os.environ["AGENTS_FILE"] = str(DEMO_SEED)  # as `make worker` does: the same agents
    try:
        asyncio.run(serve(args.port))
    except OSError as exc:
        print(f"talk: cannot listen on port {args.port}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
