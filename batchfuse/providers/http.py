"""HTTP for providers: the one place where aiohttp's exceptions become batchfuse errors.

Connection failures, timeouts, cut-short and undecodable bodies are all *transient*: the
same request may well succeed a moment later.  Messages are scrubbed of keys.

Large replies never become large Python objects: a 200 body over :data:`SPOOL_BODY_BYTES` is
streamed into an unnamed temp file (``spool_dir``, the output folder's temp folder in a run) and
read back through ``mmap``; the JSON is parsed by :func:`batchfuse.jsonscan.loads_skeleton`,
which leaves each long image string (``data``, ``b64_json``) in the body as a
:class:`~batchfuse.jsonscan.RawString` for the outputs to decode in pieces.  Pages of a spooled
body are dropped from memory (``MADV_DONTNEED``) once scanned, and again as they are decoded.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import email.utils
import json
import math
import mmap
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from batchfuse.errors import FatalError, ProviderError, RejectedError, TransientError, scrub, shorten
from batchfuse.jsonscan import MIN_CHARS, loads_skeleton, release_pages

#: Replies larger than this are parsed in a worker thread so the event loop keeps moving.
PARSE_IN_THREAD_BYTES = 512 * 1024
#: 200 replies larger than this are streamed to a temp file instead of held in memory.
SPOOL_BODY_BYTES = 4 * 1024 * 1024
#: The JSON keys whose long string values (base64 images) stay in the body, unparsed.
IMAGE_KEYS = ("data", "b64_json")
#: How much of an API's error message is kept (after scrubbing).
MESSAGE_CHARS = 300
#: The longest wait a ``Retry-After`` header can ask for.
MAX_RETRY_AFTER_S = 3600.0


@dataclass
class HttpReply:
    status: int
    headers: Mapping[str, str]
    #: The body: ``bytes``/``bytearray``, or a read-only ``mmap`` of a spooled temp file.
    body: Any
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
    spool_dir: Path | None = None,
) -> HttpReply:
    """POST ``body`` as JSON and parse the JSON reply (of any status); a large 200 reply is
    spooled to an unnamed temp file in ``spool_dir`` (default: the system's temp folder)."""
    payload = json.dumps(body, ensure_ascii=False).encode("utf-8")
    started = time.monotonic()
    try:
        async with session.post(
            url,
            data=payload,
            headers={**headers, "Content-Type": "application/json"},
            timeout=aiohttp.ClientTimeout(total=timeout_s),
        ) as resp:
            status, resp_headers = resp.status, resp.headers
            raw = await _read_body(resp, spool_dir)
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
    except OSError as exc:  # the spool file could not be written (full disk): try again later
        raise TransientError(f"cannot keep the reply in a temp file: {exc.strerror or exc}", code="spool") from None
    latency_ms = (time.monotonic() - started) * 1000
    try:
        data = loads_skeleton(raw, IMAGE_KEYS) if status == 200 and len(raw) >= MIN_CHARS else None
        if data is not None:
            release_pages(raw)  # scanned; the image strings are read again, in pieces, when decoded
        elif len(raw) > PARSE_IN_THREAD_BYTES:
            data = await asyncio.to_thread(_loads, raw)
        else:
            data = _loads(raw) if raw else None
    except ValueError:
        if status >= 400:
            data = None
        else:
            raise TransientError(
                f"HTTP {status} reply is not valid JSON (truncated or garbled)", status=status, code="bad_json"
            ) from None
    return HttpReply(status, resp_headers, raw, data, latency_ms)


def _loads(raw: Any) -> Any:
    """``json.loads`` of a body of any kind (an ``mmap`` is copied first: the rare slow path)."""
    return json.loads(raw if isinstance(raw, (bytes, bytearray)) else raw[:])


def _spool_file(spool_dir: Path | None) -> Any:
    """An unnamed temp file for a reply's body (gone from disk when closed and unmapped)."""
    if spool_dir is not None:
        spool_dir.mkdir(parents=True, exist_ok=True)
    return tempfile.TemporaryFile(dir=spool_dir)  # noqa: SIM115 - the caller closes it


async def _read_body(resp: aiohttp.ClientResponse, spool_dir: Path | None) -> Any:
    """The reply's body: ``bytes`` when small (or not a 200), else a read-only ``mmap`` of an
    unnamed temp file it was streamed into (gone from disk once the last view of it is)."""
    if resp.status != 200 or (resp.content_length is not None and resp.content_length <= SPOOL_BODY_BYTES):
        return await resp.read()
    buf = bytearray()
    spool = None
    try:
        if resp.content_length is not None:  # known to be large: straight to the file
            spool = _spool_file(spool_dir)
        async for piece in resp.content.iter_any():
            if spool is not None:
                spool.write(piece)
                continue
            buf += piece
            if len(buf) > SPOOL_BODY_BYTES:
                spool = _spool_file(spool_dir)
                spool.write(buf)
                buf = bytearray()
        if spool is None:
            return bytes(buf)
        if spool.tell() == 0:  # an empty body cannot be mapped; there is nothing to map anyway
            return b""
        spool.flush()
        return mmap.mmap(spool.fileno(), 0, access=mmap.ACCESS_READ)
    finally:
        if spool is not None:
            spool.close()  # the mmap keeps its own handle


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
