"""Convex's answers, good and bad, through httpx's transport seam."""

from __future__ import annotations

import json

import httpx
import pytest

from services.errors import StoreResponseError, StoreUnavailableError
from services.store.convex_client import ConvexFunctionError, ConvexHttpClient


def client_for(handler: httpx.MockTransport, timeout: float = 0.2) -> ConvexHttpClient:
    return ConvexHttpClient("http://convex.test", "secret-key", timeout_seconds=timeout, transport=handler)


async def test_sends_the_deploy_key_and_json_format_and_returns_the_value() -> None:
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"status": "success", "value": {"ok": 1}, "logLines": []})

    client = client_for(httpx.MockTransport(handle))
    assert await client.call("query", "agents:get", {"agentId": "x"}) == {"ok": 1}
    await client.aclose()
    assert seen[0].headers["Authorization"] == "Convex secret-key"
    assert seen[0].url.path == "/api/query"
    assert json.loads(seen[0].content) == {"path": "agents:get", "args": {"agentId": "x"}, "format": "json"}


@pytest.mark.parametrize("status", [200, 560])
async def test_a_failing_function_is_an_error_whatever_the_http_code(status: int) -> None:
    body = {"status": "error", "errorMessage": "boom", "errorData": {"code": "X"}, "logLines": []}
    client = client_for(httpx.MockTransport(lambda r: httpx.Response(status, json=body)))
    with pytest.raises(ConvexFunctionError) as info:
        await client.call("mutation", "agents:update", {})
    await client.aclose()
    assert info.value.data == {"code": "X"}
    assert "boom" in str(info.value)


async def test_overload_is_retried_with_backoff_until_the_deadline() -> None:
    calls: list[int] = []

    def handle(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(503, json={"code": "Overloaded", "message": "later"})

    client = client_for(httpx.MockTransport(handle), timeout=0.2)
    with pytest.raises(StoreUnavailableError, match="HTTP 503"):
        await client.call("query", "agents:get", {})
    await client.aclose()
    assert 2 <= len(calls) <= 20  # retried, and bounded


async def test_a_transient_failure_then_success_returns_the_value() -> None:
    answers = iter([httpx.Response(502), httpx.Response(200, json={"status": "success", "value": 7})])
    client = client_for(httpx.MockTransport(lambda r: next(answers)))
    assert await client.call("query", "q:x", {}) == 7
    await client.aclose()


@pytest.mark.parametrize(
    ("response", "message"),
    [
        (httpx.Response(200, content=b"not json"), "not JSON"),
        (httpx.Response(200, json=[1, 2]), "malformed"),
        (httpx.Response(200, json={"status": "success"}), "malformed"),
        (httpx.Response(401, json={"code": "BadAdminKey", "message": "nope"}), "BadAdminKey"),
    ],
)
async def test_malformed_and_request_level_answers_are_typed_and_not_retried(
    response: httpx.Response, message: str
) -> None:
    calls: list[int] = []

    def handle(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return response

    client = client_for(httpx.MockTransport(handle))
    with pytest.raises(StoreResponseError, match=message):
        await client.call("query", "agents:get", {})
    await client.aclose()
    assert len(calls) == 1
