"""The stand-in's aiohttp application: one route table over the endpoint modules."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable

from aiohttp import web

from devtools.openai_standin.chat import ChatEndpoint
from devtools.openai_standin.config import StandinConfig
from devtools.openai_standin.prompt_cache import PromptCache
from devtools.openai_standin.speech_endpoint import SpeechEndpoint
from devtools.openai_standin.stats import Stats
from devtools.openai_standin.transcriptions_endpoint import TranscriptionsEndpoint

STATS = web.AppKey("stats", Stats)
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
MODELS = ("gpt-4o-mini", "gpt-4o-mini-tts", "gpt-4o-transcribe", "gpt-4o-mini-transcribe", "gpt-realtime")


@web.middleware
async def _count(request: web.Request, handler: _Handler) -> web.StreamResponse:
    if not request.path.startswith("/_standin/"):
        request.app[STATS].count(request.path)
    return await handler(request)


async def _request_id(request: web.Request, response: web.StreamResponse) -> None:
    """OpenAI names every answer in ``x-request-id``; the plugins log its absence."""
    response.headers.setdefault("x-request-id", f"req_{uuid.uuid4().hex}")


async def _models(request: web.Request) -> web.Response:
    created = int(time.time())
    data = [{"id": name, "object": "model", "created": created, "owned_by": "standin"} for name in MODELS]
    return web.json_response({"object": "list", "data": data})


async def _root(request: web.Request) -> web.Response:
    """What the plugins' prewarm ``GET {base}/`` reaches: any answer warms the connection."""
    return web.json_response({"object": "standin", "ok": True})


_STARTED = time.monotonic()


async def _stats(request: web.Request) -> web.Response:
    """The counters, plus this process's CPU time (never reset), so a load test can put
    the stand-in's own cost next to the worker's."""
    process = {"cpu_seconds": round(time.process_time(), 3), "uptime_seconds": round(time.monotonic() - _STARTED, 3)}
    return web.json_response({**request.app[STATS].snapshot(), "process": process})


def build_app(config: StandinConfig) -> web.Application:
    from devtools.openai_standin.realtime_ws import RealtimeEndpoint

    stats = Stats()
    cache = PromptCache()
    app = web.Application(middlewares=[_count])
    app[STATS] = stats
    realtime = RealtimeEndpoint(config, stats)

    async def reset(request: web.Request) -> web.Response:
        stats.reset()
        cache.clear()
        return web.json_response({"ok": True})

    async def warm(app: web.Application) -> None:
        await asyncio.to_thread(realtime.warm)

    app.on_startup.append(warm)
    app.on_response_prepare.append(_request_id)
    app.router.add_get("/v1/models", _models)
    app.router.add_get("/v1/", _root)
    app.router.add_get("/v1", _root)
    app.router.add_post("/v1/chat/completions", ChatEndpoint(config, stats, cache).handle)
    app.router.add_post("/v1/audio/speech", SpeechEndpoint(config, stats).handle)
    transcriptions = TranscriptionsEndpoint(config, stats, realtime.book)
    app.router.add_post("/v1/audio/transcriptions", transcriptions.handle)
    app.router.add_get("/v1/realtime", realtime.handle)
    app.router.add_get("/_standin/stats", _stats)
    app.router.add_post("/_standin/reset", reset)
    return app
