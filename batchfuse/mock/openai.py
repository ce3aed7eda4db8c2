"""OpenAI-compatible ``/v1/images/generations`` (the relay format) and its result URLs.

Reference images arrive as data URLs or http(s) URLs. The mock never fetches anything from the
network: a URL that points at its own ``/files/`` route is read from ``static_dir`` directly,
and any other URL is accepted unread (drawn as a labelled tile), as a relay would fetch it.
"""

from __future__ import annotations

import math
import mimetypes
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from yarl import URL

from batchfuse.model_catalog import ModelEntry

from .echo import echo_of, echo_reply
from .faults import Marker, parse_markers
from .images import ImageDataError, Reference, ReferenceDecoder
from .models import openai_model, pixel_size
from .state import MockState, StoredResult, state_of
from .validation import InvalidRequest, read_json_object

REQUEST_FIELDS = frozenset({"model", "prompt", "image", "size", "response_format", "n"})
RESPONSE_FORMATS = ("url", "b64_json")
MAX_N = 10
_DATA_URL = re.compile(r"data:image/(png|jpeg|webp|gif);base64,(.*)", re.DOTALL)
_SIZE = re.compile(r"(\d+)[:x](\d+)")
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


@dataclass(frozen=True)
class ImagesRequest:
    """A valid images request, reduced to what shapes the reply."""

    model: str
    entry: ModelEntry
    image_size: str
    prompt: str
    refs: list[Reference]
    markers: list[Marker]
    ratio: str
    response_format: str
    n: int


def openai_error(
    status: int, message: str, type_: str, code: str | None, param: str | None = None
) -> web.Response:
    """The OpenAI error envelope: ``{"error": {"message", "type", "param", "code"}}`` (openai-python
    reads ``param`` and ``code`` into ``APIStatusError``; both may be null)."""
    error = {"message": message, "type": type_, "param": param, "code": code}
    return web.json_response({"error": error}, status=status)


def _invalid(
    message: str, code: str = "invalid_request", status: int = 400, param: str | None = None
) -> web.Response:
    return openai_error(status, message, "invalid_request_error", code, param)


def _rate_limited(delay_s: float, limit: int | None = None) -> web.Response:
    """429 with ``Retry-After`` and OpenAI's ``x-ratelimit-*-requests`` headers (limit, remaining,
    time until reset as ``"1.5s"``; OpenAI sends e.g. ``12ms``, as quoted in
    community.openai.com/t/1268905), which openai-python exposes on ``RateLimitError.response``."""
    seconds = max(1, -int(-delay_s // 1))
    message = f"Rate limit reached for requests. Please try again in {delay_s:.1f}s."
    response = openai_error(429, message, "requests", "rate_limit_exceeded")
    response.headers["Retry-After"] = str(seconds)
    response.headers["x-ratelimit-limit-requests"] = str(limit if limit is not None else 1)
    response.headers["x-ratelimit-remaining-requests"] = "0"
    response.headers["x-ratelimit-reset-requests"] = f"{delay_s:.3f}".rstrip("0").rstrip(".") + "s"
    return response


def _per_day_exhausted() -> web.Response:
    message = "You exceeded your current quota, please check your plan and billing details."
    return openai_error(429, message, "insufficient_quota", "insufficient_quota")


def _content_policy() -> web.Response:
    message = "Your request was rejected as a result of our safety system."
    return _invalid(message, "content_policy_violation")


# -- request checks --------------------------------------------------------------------------


def _check_scalars(body: dict[str, Any], entry: ModelEntry) -> tuple[str, str, str, int]:
    """Prompt, ratio, response format and n, with defaults; raise :class:`InvalidRequest`."""
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise InvalidRequest("prompt is required and must be a non-empty string.", param="prompt")
    size = body.get("size", "1:1")
    match = _SIZE.fullmatch(size) if isinstance(size, str) else None
    ratio = f"{match.group(1)}:{match.group(2)}" if match else None
    if ratio not in entry.aspect_ratios:
        raise InvalidRequest(
            f"size must be an aspect ratio, one of {', '.join(entry.aspect_ratios)}; got {size!r}.",
            param="size",
        )
    response_format = body.get("response_format", "url")
    if response_format not in RESPONSE_FORMATS:
        raise InvalidRequest(
            f"response_format must be 'url' or 'b64_json', got {response_format!r}.", param="response_format"
        )
    n = body.get("n", 1)
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_N:
        raise InvalidRequest(f"n must be an integer from 1 to {MAX_N}, got {n!r}.", param="n")
    return prompt, ratio, response_format, n


def _own_file(url: URL, request: web.Request) -> str | None:
    """The file name if ``url`` points at this server's ``/files/`` route, else ``None``."""
    if not url.path.startswith("/files/"):
        return None
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    own_port = sockname[1] if isinstance(sockname, tuple) and len(sockname) >= 2 else None
    same_authority = f"{url.host}:{url.port}" == request.host or url.host == request.host
    if same_authority or (url.host in _LOOPBACK and url.port == own_port):
        return url.path[len("/files/") :]
    return None


def safe_static_path(static_dir: str | None, name: str) -> Path | None:
    """The file ``name`` inside ``static_dir``, or ``None`` if absent or outside it."""
    if not static_dir or not name or "/" in name or "\\" in name or name.startswith("."):
        return None
    path = Path(static_dir) / name
    return path if path.is_file() else None


async def _reference(item: Any, where: str, request: web.Request, state: MockState) -> Reference:
    decoder: ReferenceDecoder = state.references
    if not isinstance(item, str) or not item:
        raise InvalidRequest(f"{where} must be a non-empty string (an http(s) URL or a data URL).", param="image")
    data_url = _DATA_URL.fullmatch(item)
    if data_url:
        try:
            return await decoder.from_base64(data_url.group(2), f"image/{data_url.group(1)}")
        except ImageDataError as exc:
            raise InvalidRequest(f"{where}: {exc}", code="invalid_image", param="image") from None
    if item.startswith("data:"):
        raise InvalidRequest(
            f"{where}: data URLs must look like data:image/(png|jpeg|webp|gif);base64,...",
            code="invalid_image",
            param="image",
        )
    try:
        url = URL(item)
    except ValueError:
        url = None
    if url is None or url.scheme not in ("http", "https") or not url.host:
        raise InvalidRequest(
            f"{where} must be an http(s) URL or a data:image/...;base64 URL.", code="invalid_image", param="image"
        )
    name = _own_file(url, request)
    if name is None:
        return decoder.placeholder(item)
    path = safe_static_path(state.config.static_dir, name)
    if path is None:
        raise InvalidRequest(
            f"{where}: failed to download image from {item}: 404 Not Found", code="invalid_image_url", param="image"
        )
    mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    try:
        return await decoder.from_bytes(path.read_bytes(), mime, path.name)
    except ImageDataError as exc:
        raise InvalidRequest(f"{where}: {exc}", code="invalid_image", param="image") from None


async def parse_request(body: dict[str, Any], request: web.Request, state: MockState) -> ImagesRequest:
    """Check an images-generations body. Unknown model → 404; anything else wrong → 400."""
    unknown = sorted(set(body) - REQUEST_FIELDS)
    if unknown:
        raise InvalidRequest(f"Unrecognized request argument supplied: {', '.join(unknown)}", param=unknown[0])
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("model is required and must be a string.", param="model")
    entry = openai_model(model)
    if entry is None or entry.relay_size is None:
        raise InvalidRequest(
            f"The model `{model}` does not exist or you do not have access to it.", 404, "model_not_found", "model"
        )
    prompt, ratio, response_format, n = _check_scalars(body, entry)
    images = body.get("image", [])
    if "image" in body and isinstance(images, str):
        images = [images]
    elif "image" in body and (not isinstance(images, list) or not images):
        raise InvalidRequest("image must be a string or a non-empty array of strings.", param="image")
    if len(images) > entry.max_reference_images:
        raise InvalidRequest(
            f"too many images: {len(images)}; at most {entry.max_reference_images}.", param="image"
        )
    try:
        markers = parse_markers(prompt)
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from None
    refs = [await _reference(item, f"image[{i}]", request, state) for i, item in enumerate(images)]
    return ImagesRequest(model, entry, entry.relay_size, prompt, refs, markers, ratio, response_format, n)


# -- handlers --------------------------------------------------------------------------------


def _bearer_key(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, key = header.partition(" ")
    return key.strip() if scheme.lower() == "bearer" and key.strip() else None


async def handle_images_generations(request: web.Request) -> web.StreamResponse:
    """``POST /v1/images/generations``."""
    state = state_of(request)
    arrival = time.monotonic()
    entry = state.begin(request, "openai")
    key = _bearer_key(request)
    verdict = state.check_key(key)
    if verdict != "ok":
        message = (
            "You didn't provide an API key. Send it as 'Authorization: Bearer KEY'."
            if verdict == "missing"
            else "Incorrect API key provided."
        )
        return state.finish(entry, openai_error(401, message, "invalid_request_error", "invalid_api_key"))
    assert key is not None
    entry["key_ok"] = True
    try:
        body = await read_json_object(request)
        if isinstance(body.get("model"), str):
            entry["model"] = body["model"]
        if state.config.record_bodies:
            entry["body"] = body
        parsed = await parse_request(body, request, state)
    except InvalidRequest as exc:
        return state.finish(entry, _invalid(exc.message, exc.code, exc.status, exc.param))
    entry["prompt"] = parsed.prompt
    entry["n_images"] = len(parsed.refs)

    key_id = state.key_id(key)
    admission = state.admit(key_id, parsed.prompt, parsed.markers, arrival)
    fault = admission.fault
    if fault == "outage":
        return state.finish(
            entry,
            openai_error(
                503, "The service is temporarily unavailable.", "server_error", "service_unavailable"
            ),
            fault,
        )
    if fault == "rpm":
        return state.finish(entry, _rate_limited(admission.retry_after or 1.0, state.config.rpm_limit), fault)
    if fault == "perday":
        return state.finish(entry, _per_day_exhausted(), fault)
    try:
        echo = echo_of(parsed.prompt)
    except ValueError as exc:
        return state.finish(entry, _invalid(str(exc)))
    if echo is not None:
        reply = await echo_reply(echo, key, "openai", lambda: _success(request, state, parsed))
        return state.finish(entry, reply, "echo")
    await state.sleep_latency()
    return await _answer(request, state, entry, parsed, fault, key_id)


async def _answer(
    request: web.Request,
    state: MockState,
    entry: dict[str, Any],
    parsed: ImagesRequest,
    fault: str | None,
    key_id: str,
) -> web.StreamResponse:
    if fault == "500":
        return state.finish(
            entry,
            openai_error(
                500, "The server had an error processing your request.", "server_error", "internal_error"
            ),
            fault,
        )
    if fault == "503":
        return state.finish(
            entry,
            openai_error(503, "The upstream model is overloaded.", "server_error", "service_unavailable"),
            fault,
        )
    if fault == "429":
        return state.finish(entry, _rate_limited(1.0), fault)
    if fault == "400":
        return state.finish(entry, _invalid("Invalid request (injected by a mock marker)."), fault)
    if fault in ("safety", "blocked"):
        return state.finish(entry, _content_policy(), fault)
    if fault in ("text_only", "no_image"):
        # A relay that got no image from upstream passes on an empty list; clients must check.
        return state.finish(entry, web.json_response({"created": int(time.time()), "data": []}), fault)
    return await state.deliver(request, entry, fault, key_id, lambda: _success(request, state, parsed))


async def _success(request: web.Request, state: MockState, parsed: ImagesRequest) -> web.Response:
    config = state.config
    size = pixel_size(parsed.entry, parsed.image_size, parsed.ratio, config.image_scale)
    data = []
    for index in range(parsed.n):
        variant = f"#{index + 1}" if index else ""
        image = await state.images.render(config.image_mode, size, parsed.prompt, parsed.refs, variant)
        if parsed.response_format == "b64_json":
            data.append({"b64_json": image.b64})
            continue
        result = StoredResult(
            image, parsed.prompt, parsed.model, parsed.markers, time.monotonic() + config.url_ttl_s
        )
        result_id = state.results.add(result)
        expires = time.time() + config.url_ttl_s
        base = (config.result_base or f"{request.scheme}://{request.host}").rstrip("/")
        data.append({"url": f"{base}/results/{result_id}.png?Expires={expires:.3f}"})
    return web.json_response({"created": int(time.time()), "data": data})


def _expired_link() -> web.Response:
    """What a signed storage URL answers once it has expired: 403, an XML body saying so."""
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>'
        "<Message>Request has expired</Message></Error>"
    )
    return web.Response(status=403, text=body, content_type="application/xml")


async def handle_result_download(request: web.Request) -> web.StreamResponse:
    """``GET /results/{id}.png?Expires=T``: the image until ``T`` (unix time, set from
    ``url_ttl_s``) or until the test expires it, then 403 "Request has expired" as signed links
    answer; unknown ids 404."""
    state = state_of(request)
    entry = state.begin(request, "download")
    entry["key_ok"] = True  # result URLs are public, like the relay's signed links
    try:
        expires = float(request.query.get("Expires", "inf"))
    except ValueError:
        expires = math.inf
    if time.time() >= expires:
        return state.finish(entry, _expired_link())
    name = request.match_info["name"]
    result_id = name[: -len(".png")] if name.endswith(".png") else None
    result = state.results.get(result_id) if result_id else None
    if result is None and result_id and state.results.has_expired(result_id):
        return state.finish(entry, _expired_link())
    if result is None:
        message = "This result URL has expired or never existed."
        return state.finish(entry, openai_error(404, message, "invalid_request_error", "not_found"))
    entry["model"] = result.model
    entry["prompt"] = result.prompt
    if result.markers and state.faults.download_fault(result.prompt, result.markers):
        error = openai_error(
            500, "Failed to fetch the result from storage.", "server_error", "download_failed"
        )
        return state.finish(entry, error, "download_fail")
    return state.finish(entry, web.Response(body=result.image.png, content_type="image/png"))
