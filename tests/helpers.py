"""Test doubles that implement the real interfaces: a clock, and an httpx transport that
injects faults in front of the real local Convex backend; and ``wait_for``, the one way
the tests wait for what has no event."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx

from devtools.processes import DEMO_SEED, LocalConvex
from services import AgentConfigService, ServiceSettings
from services.store.convex import ConvexAgentStore
from services.store.convex_client import ConvexHttpClient
from services.store.protocol import AgentVersion


class FakeClock:
    """Wall-clock seconds that only move when a test says so."""

    def __init__(self, start: float | None = None) -> None:
        self.now = time.time() if start is None else start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class FaultyTransport(httpx.AsyncBaseTransport):
    """Passes requests to the real backend unless told to fail them.

    ``mode``: "ok", "503", "garbage" (200 with a non-Convex body), "malformed" (a
    success whose document is broken), "refuse"
    (connection refused), "hang" (never answers). ``hold`` delays requests to one
    function path until the (thread-safe) event is set, to stage races; ``fail_paths``
    answer 503 for those paths only; ``arrived`` is set when a request for its path
    comes in (tests wait on it instead of sleeping).
    ``hold_answer`` lets the request reach the backend and delays only its answer
    (``answered`` lists the paths whose answer is being held). ``rewrite`` maps a path
    to a function of the success value, to serve what a broken deployment might.
    """

    mode: str = "ok"
    hold: dict[str, threading.Event] = field(default_factory=dict)
    fail_paths: set[str] = field(default_factory=set)
    arrived: dict[str, threading.Event] = field(default_factory=dict)
    hold_answer: dict[str, threading.Event] = field(default_factory=dict)
    rewrite: dict[str, Callable[[Any], Any]] = field(default_factory=dict)
    seen: list[str] = field(default_factory=list)
    answered: list[str] = field(default_factory=list)
    answer_held: threading.Event = field(default_factory=threading.Event)
    _inner: httpx.AsyncHTTPTransport = field(default_factory=httpx.AsyncHTTPTransport)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        import json

        body = json.loads(request.content or b"{}")
        path = body.get("path", "")
        self.seen.append(path)
        if path in self.arrived:
            self.arrived[path].set()
        if path in self.hold:
            await asyncio.to_thread(self.hold[path].wait, 30)
        if self.mode == "503" or path in self.fail_paths:
            return httpx.Response(503, json={"code": "Overloaded", "message": "try later"})
        if self.mode == "garbage":
            return httpx.Response(200, content=b"<html>proxy error</html>")
        if self.mode == "malformed":  # a success whose document lacks required fields
            return httpx.Response(
                200, json={"status": "success", "value": {"_id": body["args"].get("agentId"), "name": 5}}
            )
        if self.mode == "refuse":
            raise httpx.ConnectError("connection refused", request=request)
        if self.mode == "hang":
            await asyncio.sleep(3600)
        response = await self._inner.handle_async_request(request)
        if path in self.hold_answer or path in self.rewrite:
            await response.aread()
            self.answered.append(path)
            if path in self.hold_answer:
                self.answer_held.set()
                await asyncio.to_thread(self.hold_answer[path].wait, 30)
            if path in self.rewrite:
                payload = json.loads(response.content)
                if payload.get("status") == "success":
                    payload["value"] = self.rewrite[path](payload["value"])
                return httpx.Response(response.status_code, json=payload)
            return httpx.Response(response.status_code, content=response.content, headers=response.headers)
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


def settings_for(convex: LocalConvex | None = None, **overrides: Any) -> ServiceSettings:
    values: dict[str, Any] = {"PROMPT_REFRESH_SECONDS": 0.2, "CONVEX_TIMEOUT_SECONDS": 1.0}
    if convex is not None:
        values |= {"CONVEX_URL": convex.url, "CONVEX_DEPLOY_KEY": convex.deploy_key}
    else:
        values["AGENTS_FILE"] = str(DEMO_SEED)  # the embedded store has no default file
    values |= overrides
    return ServiceSettings.model_validate(values)


def convex_service(
    convex: LocalConvex,
    *,
    transport: FaultyTransport | None = None,
    clock: Callable[[], float] = time.time,
    run_refresher: bool = False,
    **overrides: Any,
) -> AgentConfigService:
    settings = settings_for(convex, **overrides)

    def factory() -> ConvexAgentStore:
        client = ConvexHttpClient(
            convex.url, convex.deploy_key, timeout_seconds=settings.convex_timeout_seconds, transport=transport
        )
        return ConvexAgentStore(client)

    return AgentConfigService(settings, store_factory=factory, run_refresher=run_refresher, clock=clock)


def gets(convex: LocalConvex) -> int:
    return int(convex.stats()["byPath"].get("agents:get", 0))


T = TypeVar("T")


def wait_for(predicate: Callable[[], T], seconds: float, *, what: str | None = None, interval: float = 0.05) -> T:
    """The tests' one way to wait for something that has no event to wait on (another
    process, a server's answer): ask ``predicate`` every ``interval`` until it returns
    something truthy, and return that. The last ask comes after ``seconds``; a falsy
    answer then is returned, or, when ``what`` names the wait, raised as an
    ``AssertionError``."""
    deadline = time.monotonic() + seconds
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return _settled(value, seconds, what)
        time.sleep(interval)


async def wait_for_async(
    predicate: Callable[[], Awaitable[T]], seconds: float, *, what: str | None = None, interval: float = 0.05
) -> T:
    """``wait_for`` for a predicate that must be awaited (it asks a server), sleeping on
    the event loop between asks."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while True:
        value = await predicate()
        if value or loop.time() > deadline:
            return _settled(value, seconds, what)
        await asyncio.sleep(interval)


def _settled(value: T, seconds: float, what: str | None) -> T:
    if not value and what is not None:
        raise AssertionError(f"timed out after {seconds:g} s waiting for: {what}")
    return value


async def poll_versions(service: AgentConfigService) -> list[AgentVersion]:
    """One poll of ``service``'s version refresher, now: what the refresher's loop runs
    every interval. Tests step it instead of waiting out the interval; production has no
    such call (the loop is the only caller), so it lives here, reaching into the service."""
    clients = service._clients  # the refresher the service loop owns
    if clients is None or clients.refresher is None:
        return []
    return await service._loop.run(clients.refresher.poll_once())
