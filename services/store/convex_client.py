"""Convex's HTTP API over httpx: one request/response call, errors translated here only.

The official Python client is a blocking Rust extension that holds the GIL; this
module speaks the documented HTTP API instead (``POST /api/query`` and friends,
``Authorization: Convex <deploy key>``). A failing function may answer HTTP 200 or 560,
so the body's ``status`` decides, never the HTTP code alone.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Mapping
from typing import Any, Literal

import httpx

from services.errors import StoreAuthError, StoreResponseError, StoreUnavailableError
from services.hints import clip
from services.tls import client_ssl_context

FunctionKind = Literal["query", "mutation", "action"]

# Status codes worth another try: the request may succeed on a healthy replica or later.
_RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
# The deploy key was refused: a configuration error, never retried, never an "outage".
_AUTH_STATUS = frozenset({401, 403})


class ConvexFunctionError(StoreResponseError):
    """The function ran and failed (``status: "error"``); ``data`` is its ConvexError data."""

    def __init__(self, path: str, message: str, data: object = None) -> None:
        super().__init__(f"{path} failed: {message}")
        self.path = path
        self.data = data


class ConvexHttpClient:
    """Calls Convex functions; retries transport failures with jitter within a deadline.

    ``transport`` is the test seam (``httpx.MockTransport``); production uses httpx's
    default connection pool. The client belongs to the event loop that first uses it.
    """

    def __init__(
        self,
        url: str,
        deploy_key: str,
        *,
        timeout_seconds: float,
        attempts_deadline_seconds: float | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._timeout = timeout_seconds
        self._deadline = attempts_deadline_seconds if attempts_deadline_seconds is not None else 3 * timeout_seconds
        self._client = httpx.AsyncClient(
            base_url=url.rstrip("/"),
            headers={"Authorization": f"Convex {deploy_key}", "Content-Type": "application/json"},
            timeout=httpx.Timeout(timeout_seconds),
            transport=transport,
            verify=client_ssl_context(),
            limits=httpx.Limits(max_connections=50, max_keepalive_connections=20),
        )

    async def call(self, kind: FunctionKind, path: str, args: Mapping[str, Any]) -> Any:
        """Run ``path`` and return its value, retrying what is retryable until the deadline."""
        deadline = time.monotonic() + self._deadline
        attempt = 0
        while True:
            attempt += 1
            remaining = deadline - time.monotonic()
            try:
                return await self._call_once(kind, path, args, min(self._timeout, max(remaining, 0.001)))
            except StoreUnavailableError:
                backoff = min(0.05 * 2 ** (attempt - 1), 0.5) * random.uniform(0.5, 1.5)
                if time.monotonic() + backoff >= deadline:
                    raise
                await asyncio.sleep(backoff)

    async def _call_once(self, kind: FunctionKind, path: str, args: Mapping[str, Any], limit_s: float) -> Any:
        body = {"path": path, "args": dict(args), "format": "json"}
        try:
            response = await self._client.post(f"/api/{kind}", json=body, timeout=limit_s)
        except httpx.TimeoutException as exc:
            raise StoreUnavailableError(f"{path}: no answer within {limit_s:.2f}s") from exc
        except httpx.TransportError as exc:
            raise StoreUnavailableError(f"{path}: {type(exc).__name__}: {exc}") from exc
        if response.status_code in _AUTH_STATUS:
            try:
                detail = response.json()
                code = clip(detail.get("code"), 40) if isinstance(detail, dict) else "?"
            except ValueError:
                code = "?"
            raise StoreAuthError(f"{path}: HTTP {response.status_code} {code}: the deploy key was refused")
        if response.status_code in _RETRYABLE_STATUS:
            raise StoreUnavailableError(f"{path}: HTTP {response.status_code}")
        try:
            payload = response.json()
        except ValueError as exc:
            raise StoreResponseError(f"{path}: HTTP {response.status_code} with a body that is not JSON") from exc
        if not isinstance(payload, dict):
            raise StoreResponseError(f"{path}: HTTP {response.status_code} with a malformed body")
        status = payload.get("status")
        if status == "success" and "value" in payload:
            return payload["value"]
        if status == "error":
            raise ConvexFunctionError(path, str(payload.get("errorMessage", "")), payload.get("errorData"))
        if "code" in payload:  # request-level error: bad key, bad body, unknown route
            raise StoreResponseError(
                f"{path}: HTTP {response.status_code} {payload.get('code')}: {payload.get('message')}"
            )
        raise StoreResponseError(f"{path}: HTTP {response.status_code} with a malformed body")

    async def aclose(self) -> None:
        await self._client.aclose()
