"""HTTP for providers: the one place where aiohttp's exceptions become batchfuse errors.

Connection failures, timeouts, cut-short and undecodable bodies are all *transient*: the
same request may well succeed a moment later.  Messages are scrubbed of keys.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import email.utils
import json
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from batchfuse.errors import FatalError, ProviderError, RejectedError, TransientError, scrub, shorten

#: Replies larger than this are parsed in a worker thread so the event loop keeps moving.
PARSE_IN_THREAD_BYTES = 512 * 1024
#: How much of an API's error message is kept (after scrubbing).
MESSAGE_CHARS = 300
#: The longest wait a ``Retry-After`` header can ask for.
MAX_RETRY_AFTER_S = 3600.0


@dataclass
class HttpReply:
    status: int
    headers: Mapping[str, str]
    body: bytes
    data: Any
    latency_ms: float


def retry_after_seconds(value: str | None) -> float | None:
    """``Retry-After`` as seconds: either a number or an HTTP date; at most an hour, and
    ``None`` for anything else (``inf``, ``nan``, garbage), so no header can hold a run forever."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError, OverflowError):
            return None
    if not math.isfinite(seconds):
        return None
    return min(MAX_RETRY_AFTER_S, max(0.0, seconds))


def error_message(reply: HttpReply, message: Any) -> str:
    """An error reply's message for our own: the API's ``message`` field, or else the start of
    the body; scrubbed, then cut to :data:`MESSAGE_CHARS`."""
    if message:
        return shorten(str(message), MESSAGE_CHARS)
    body = reply.body[: MESSAGE_CHARS * 4].decode("utf-8", "replace")
    return shorten(body, MESSAGE_CHARS) or "no message"


async def post_json(
    session: aiohttp.ClientSession,
    url: str,
    headers: Mapping[str, str],
    body: dict[str, Any],
    timeout_s: float,
) -> HttpReply:
    """POST ``body`` as JSON and parse the JSON reply (of any status)."""
    payload = json.dumps(body, ensure_ascii=False).encode("utf-8")
    started = time.monotonic()
    try:
        async with session.post(
            url,
            data=payload,
            headers={**headers, "Content-Type": "application/json"},
            timeout=aiohttp.ClientTimeout(total=timeout_s),
        ) as resp:
            raw = await resp.read()
            status, resp_headers = resp.status, resp.headers
    except (asyncio.TimeoutError, TimeoutError):
        raise TransientError(f"no reply within {timeout_s:g} s (timeout)", code="timeout") from None
    except aiohttp.ClientPayloadError:
        raise TransientError("the reply was cut short (truncated body)", code="truncated") from None
    except aiohttp.ServerDisconnectedError:
        raise TransientError("the server closed the connection without replying", code="reset") from None
    except aiohttp.ClientConnectionError as exc:
        raise TransientError(f"connection failed: {scrub(str(exc)) or type(exc).__name__}", code="connection") from None
    except aiohttp.ClientError as exc:
        raise TransientError(f"HTTP client error: {scrub(str(exc)) or type(exc).__name__}", code="client") from None
    latency_ms = (time.monotonic() - started) * 1000
    try:
        if len(raw) > PARSE_IN_THREAD_BYTES:
            data = await asyncio.to_thread(json.loads, raw)
        else:
            data = json.loads(raw) if raw else None
    except ValueError:
        if status >= 400:
            data = None
        else:
            raise TransientError(
                f"HTTP {status} reply is not valid JSON (truncated or garbled)", status=status, code="bad_json"
            ) from None
    return HttpReply(status, resp_headers, raw, data, latency_ms)


def not_an_image(content_type: str) -> str | None:
    """The media type a download was served as, when it says it is not an image (else None)."""
    kind = content_type.split(";", 1)[0].strip().lower()
    if kind and not kind.startswith("image/") and kind != "application/octet-stream":
        return shorten(kind, 60)
    return None


def decode_b64(data: str) -> bytes:
    """An image from a reply's base64 (whitespace ignored); a garbled one is a transient fault."""
    try:
        return base64.b64decode("".join(data.split()), validate=True)
    except (binascii.Error, ValueError):
        raise TransientError("an image in the reply is not valid base64", status=200, code="bad_image") from None


def classify_status(
    reply: HttpReply,
    text: str,
    code: str,
    *,
    bad_key: bool = False,
    not_found: bool = False,
    quota: str | None = None,
    retry_after: float | None = None,
) -> ProviderError:
    """The error class of a non-200 reply from its status, as both APIs use them; the provider
    adds what its error body says (``bad_key``, ``not_found``, an exhausted ``quota`` message
    with ``{text}`` where the reply's text goes,
    a longer ``retry_after`` for a 429)."""
    kw: dict[str, Any] = {"status": reply.status, "code": code}
    header_wait = retry_after_seconds(reply.headers.get("Retry-After"))
    if reply.status in (401, 403) or bad_key:
        return FatalError(f"the API refused the key ({text}); check the key's environment variable", **kw)
    if reply.status == 404 or not_found:
        return FatalError(f"model or endpoint not found ({text}); check provider.model and base_url", **kw)
    if reply.status == 429:
        if quota is not None:
            return FatalError(quota.replace("{text}", text, 1), **kw)
        wait = max(header_wait or 0.0, retry_after) if retry_after is not None else header_wait
        return TransientError(f"rate limited ({text})", retry_after=wait, **kw)
    if reply.status == 408 or reply.status >= 500:
        return TransientError(text, retry_after=header_wait, **kw)
    return RejectedError(text, **kw)
