"""The key-echo fault: a fake API that repeats the caller's key where a reply can hold text.

A prompt carrying ``[[mock-echo:PLACE@OFFSET]]`` gets a reply with the request's own key put in
PLACE after OFFSET filler characters, so a test can put a key straddling every cut a client
makes. It is a separate marker (not ``[[mock:...]]``) because it takes two arguments; it applies
to every request with that prompt. PLACE is one of :data:`PLACES`:

- ``message``: a 400 error whose ``message`` carries the key;
- ``field``: a 400 error whose status / code field carries it (Gemini ``status``, OpenAI ``code``
  and ``type``), with ``details`` carrying it too;
- ``body``: a 502 whose body is not JSON, just text carrying the key;
- ``header``: a normal success whose headers (``x-request-id``, ``x-echo``) carry it;
- ``text``: a success with a text part carrying it (Gemini) — stored as the attempt's text;
- ``said``: a reply with only a text part carrying it, no image (Gemini);
- ``finish``: a success whose ``finishReason`` carries it (Gemini);
- ``finish_noimage``: no image, and a ``finishReason`` carrying it (Gemini);
- ``block``: a ``promptFeedback.blockReason`` carrying it (Gemini);
- ``usage``: a success whose ``usageMetadata`` token counts are the key (Gemini);
- ``url``: a success whose result URLs carry the key in their query (OpenAI ``url`` replies).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from aiohttp import web

_ECHO = re.compile(r"\[\[mock-echo:([a-z_]+)@(\d+)\]\]")
PLACES = frozenset(
    {"message", "field", "body", "header", "text", "said", "finish", "finish_noimage", "block", "usage", "url"}
)


@dataclass(frozen=True)
class Echo:
    """Where to echo the key, and after how many filler characters."""

    place: str
    offset: int

    def text(self, key: str) -> str:
        """The echoed text: ``offset`` dots, the key, and a tail so a cut can fall inside it."""
        return "." * self.offset + key + " and some more text after the key"


def echo_of(prompt: str) -> Echo | None:
    """The prompt's echo marker, or ``None``; ``ValueError`` names an unknown place."""
    match = _ECHO.search(prompt)
    if match is None:
        return None
    place, offset = match.group(1), int(match.group(2))
    if place not in PLACES:
        raise ValueError(f"unknown mock echo place {place!r}; known: {', '.join(sorted(PLACES))}")
    return Echo(place, offset)


def error_reply(echo: Echo, key: str, api: str) -> web.Response | None:
    """The error reply for the places that are errors, else ``None``."""
    said = echo.text(key)
    if echo.place == "body":
        return web.Response(status=502, text=f"<bad gateway> upstream said: {said}", content_type="text/plain")
    if echo.place not in ("message", "field"):
        return None
    message = said if echo.place == "message" else "Request contains an invalid argument."
    tag = said if echo.place == "field" else None
    if api == "gemini":
        details = [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": tag or "X", "domain": tag}]
        error = {"code": 400, "message": message, "status": tag or "INVALID_ARGUMENT", "details": details}
    else:
        error = {"message": message, "type": tag or "invalid_request_error", "code": tag or "invalid_request"}
    return web.json_response({"error": error}, status=400)


async def echo_reply(echo: Echo, key: str, api: str, success: Any) -> web.Response:
    """The reply to a request with an echo marker; ``success()`` makes the normal success."""
    return error_reply(echo, key, api) or with_echo(await success(), echo, key)


def with_echo(response: web.Response, echo: Echo, key: str) -> web.Response:
    """A success ``response`` (JSON) changed to carry the key in ``echo.place``."""
    assert isinstance(response.body, bytes)
    body: dict[str, Any] = json.loads(response.body)
    said = echo.text(key)
    headers: dict[str, str] = {}
    candidate = (body.get("candidates") or [{}])[0]
    parts = candidate.get("content", {}).get("parts", [])
    if echo.place == "header":
        headers = {"x-request-id": said, "x-echo": key}
    elif echo.place == "text":
        parts.insert(0, {"text": said})
    elif echo.place == "said":
        candidate["content"]["parts"] = [{"text": said}]
    elif echo.place == "finish":
        candidate["finishReason"] = said
    elif echo.place == "finish_noimage":
        body["candidates"] = [{"finishReason": said, "index": 0}]
    elif echo.place == "block":
        body.pop("candidates", None)
        body["promptFeedback"] = {"blockReason": said}
    elif echo.place == "usage":
        body["usageMetadata"] = {"promptTokenCount": said, "candidatesTokenCount": key, "totalTokenCount": key}
    elif echo.place == "url":
        for entry in body.get("data", []):
            if "url" in entry:
                entry["url"] += ("&" if "?" in entry["url"] else "?") + "echo=" + "." * echo.offset + key
    return web.json_response(body, headers=headers)
