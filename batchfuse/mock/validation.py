"""Helpers both wire formats use to refuse malformed requests the way a strict server would."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web


class InvalidRequest(Exception):
    """A request the real API would refuse; each wire format renders it in its own error JSON.

    ``status`` defaults to 400; ``code`` lets the OpenAI format pick its ``error.code``.
    """

    def __init__(
        self, message: str, status: int = 400, code: str = "invalid_request", param: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        #: The request field at fault (OpenAI's ``error.param``), if one is.
        self.param = param


async def read_json_object(
    request: web.BaseRequest, max_bytes: int | None = None, too_large: str = ""
) -> dict[str, Any]:
    """The request body as a JSON object, or :class:`InvalidRequest` (``too_large`` if it is
    longer than ``max_bytes``; the body is read whole first, so the client sees the answer)."""
    raw = await request.read()
    if max_bytes is not None and len(raw) > max_bytes:
        raise InvalidRequest(too_large or f"request body exceeds {max_bytes} bytes")
    if not raw:
        raise InvalidRequest("request body is empty; expected a JSON object")
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidRequest(f"request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidRequest(f"request body must be a JSON object, got {type(body).__name__}")
    return body
