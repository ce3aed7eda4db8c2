"""Helpers both wire formats use to refuse malformed requests the way a strict server would."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web


class InvalidRequest(Exception):
    """A request the real API would refuse; each wire format renders it in its own error JSON.

    ``status`` defaults to 400; ``code`` lets the OpenAI format pick its ``error.code``.
    """

    def __init__(self, message: str, status: int = 400, code: str = "invalid_request") -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code


async def read_json_object(request: web.BaseRequest) -> dict[str, Any]:
    """The request body as a JSON object, or :class:`InvalidRequest`."""
    raw = await request.read()
    if not raw:
        raise InvalidRequest("request body is empty; expected a JSON object")
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidRequest(f"request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidRequest(f"request body must be a JSON object, got {type(body).__name__}")
    return body


def check_keys(obj: dict[str, Any], allowed: set[str] | frozenset[str], where: str) -> None:
    """Refuse unknown fields, naming the first one and where it was, as Google's API does."""
    for key in obj:
        if key not in allowed:
            place = f" at '{where}'" if where else ""
            raise InvalidRequest(
                f'Invalid JSON payload received. Unknown name "{key}"{place}: Cannot find field.'
            )


def require_dict(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidRequest(f"{where} must be a JSON object, got {type(value).__name__}")
    return value
