"""Bad requests answered the way OpenAI answers them: a 400 with an ``error`` object.

The openai SDK turns that body into ``BadRequestError`` with the message, so a client (or a
test) sees exactly what was wrong; the log line carries the reason, never the request body.
"""

from __future__ import annotations

import json
from typing import Any

import structlog
from aiohttp import web

log = structlog.get_logger("openai_standin")


def bad_request(message: str) -> web.HTTPBadRequest:
    log.warning("bad_request", reason=message[:200])
    body = {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": None}}
    return web.HTTPBadRequest(text=json.dumps(body), content_type="application/json")


async def read_json(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise bad_request("the body is not JSON") from exc
    if not isinstance(body, dict):
        raise bad_request("the body must be a JSON object")
    return body
