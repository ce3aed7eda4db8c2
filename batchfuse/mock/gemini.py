"""Gemini native ``generateContent``: strict request checks, replies and Google error JSON.

Strict on purpose: every field the real service (or the relay in front of it) would refuse is
refused here with the same status, so a provider bug shows up in the test-suite, not at 3 a.m.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from .echo import echo_of, echo_reply
from .faults import Marker, hang, parse_markers, reset_connection, send_truncated
from .images import ImageDataError, Reference, ReferenceDecoder, RenderedImage
from .models import (
    ASPECT_RATIOS,
    GEMINI_MODELS,
    IMAGE_SIZES,
    MAX_REFERENCE_IMAGES,
    ModelSpec,
    pixel_size,
    prompt_tokens,
    tokens_per_image,
)
from .state import MockState, state_of
from .validation import InvalidRequest, check_keys, read_json_object, require_dict

TOP_LEVEL_FIELDS = frozenset(
    {"contents", "generationConfig", "tools", "model", "safetySettings", "systemInstruction"}
)
GENERATION_CONFIG_FIELDS = frozenset({"responseModalities", "imageConfig", "temperature", "candidateCount"})
IMAGE_CONFIG_FIELDS = frozenset({"aspectRatio", "imageSize"})
IMAGE_MIME_TYPES = frozenset({"image/png", "image/jpeg", "image/webp", "image/heic", "image/heif"})
_MODALITIES = ({"IMAGE"}, {"TEXT", "IMAGE"})

QUOTA_METRIC = "generativelanguage.googleapis.com/generate_content_requests"
PER_MINUTE_QUOTA = "GenerateRequestsPerMinutePerProjectPerModel"
PER_DAY_QUOTA = "GenerateRequestsPerDayPerProjectPerModel"


@dataclass(frozen=True)
class GeminiRequest:
    """The parts of a valid request that shape the reply."""

    prompt: str
    refs: list[Reference]
    markers: list[Marker]
    #: ``TEXT`` in here puts a text part before the image.
    modalities: frozenset[str]
    ratio: str
    image_size: str


# -- replies ---------------------------------------------------------------------------------


def google_error(
    status: int, code_status: str, message: str, details: list[Any] | None = None
) -> web.Response:
    """Google's error envelope: ``{"error": {"code", "message", "status", "details"}}``."""
    body = {"error": {"code": status, "message": message, "status": code_status, "details": details or []}}
    return web.json_response(body, status=status)


def rate_limited(model: str, delay_s: float) -> web.Response:
    """Per-minute 429 with QuotaFailure and RetryInfo, plus an integer ``Retry-After`` header."""
    seconds = f"{delay_s:.3f}".rstrip("0").rstrip(".") or "0"
    details = [
        _quota_failure(model, PER_MINUTE_QUOTA),
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{seconds}s"},
    ]
    message = f"Resource has been exhausted (e.g. check quota). Please retry in {seconds}s."
    response = google_error(429, "RESOURCE_EXHAUSTED", message, details)
    response.headers["Retry-After"] = str(max(1, -int(-delay_s // 1)))
    return response


def per_day_exhausted(model: str) -> web.Response:
    """Per-day 429: QuotaFailure only; no RetryInfo, because coming back soon will not help."""
    message = f"Quota exceeded for metric: {QUOTA_METRIC}, quota: {PER_DAY_QUOTA}, model: {model}."
    return google_error(429, "RESOURCE_EXHAUSTED", message, [_quota_failure(model, PER_DAY_QUOTA)])


def _quota_failure(model: str, quota_id: str) -> dict[str, Any]:
    return {
        "@type": "type.googleapis.com/google.rpc.QuotaFailure",
        "violations": [
            {
                "quotaMetric": QUOTA_METRIC,
                "quotaId": quota_id,
                "quotaDimensions": {"location": "global", "model": model},
            }
        ],
    }


def _usage(prompt_count: int, candidates_count: int) -> dict[str, int]:
    return {
        "promptTokenCount": prompt_count,
        "candidatesTokenCount": candidates_count,
        "totalTokenCount": prompt_count + candidates_count,
    }


def _reply(
    model: str, candidates: list[dict[str, Any]] | None, usage: dict[str, int], **extra: Any
) -> web.Response:
    body: dict[str, Any] = {}
    if candidates is not None:
        body["candidates"] = candidates
    body.update(extra)
    body["usageMetadata"] = usage
    body["modelVersion"] = model
    body["responseId"] = secrets.token_urlsafe(9)
    return web.json_response(body)


def _image_part(image: RenderedImage, as_text: bool, thought: bool = False) -> dict[str, Any]:
    part: dict[str, Any]
    if as_text:
        part = {"text": f"![image](data:image/png;base64,{image.b64})"}
    else:
        part = {"inlineData": {"mimeType": "image/png", "data": image.b64}}
    if thought:
        part["thought"] = True
    return part


# -- request checks --------------------------------------------------------------------------


def _check_generation_config(body: dict[str, Any], spec: ModelSpec) -> tuple[frozenset[str], str, str]:
    """Modalities, aspect ratio and image size from ``generationConfig`` (with defaults)."""
    config = require_dict(body.get("generationConfig", {}), "generationConfig")
    check_keys(config, GENERATION_CONFIG_FIELDS, "generation_config")
    modalities = frozenset({"TEXT", "IMAGE"})  # the API's default
    if "responseModalities" in config:
        if not spec.accepts_generation_options:
            raise InvalidRequest(f"responseModalities is not supported for {spec.name}; leave it out.")
        value = config["responseModalities"]
        if (
            not isinstance(value, list)
            or len(set(map(str, value))) != len(value)
            or set(map(str, value)) not in _MODALITIES
        ):
            raise InvalidRequest(f'responseModalities must be ["IMAGE"] or ["TEXT", "IMAGE"], got {value!r}')
        modalities = frozenset(value)
    if "temperature" in config:
        value = config["temperature"]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 2:
            raise InvalidRequest(f"temperature must be a number from 0 to 2, got {value!r}")
    if "candidateCount" in config:
        value = config["candidateCount"]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidRequest(f"candidateCount must be a positive integer, got {value!r}")
    image_config = require_dict(config.get("imageConfig", {}), "generationConfig.imageConfig")
    check_keys(image_config, IMAGE_CONFIG_FIELDS, "generation_config.image_config")
    ratio = image_config.get("aspectRatio", "1:1")
    if ratio not in ASPECT_RATIOS:
        raise InvalidRequest(
            f"imageConfig.aspectRatio must be one of {', '.join(ASPECT_RATIOS)}, got {ratio!r}"
        )
    image_size = image_config.get("imageSize", "1K")
    if "imageSize" in image_config:
        if not spec.accepts_generation_options:
            raise InvalidRequest(f"imageConfig.imageSize is not supported for {spec.name}; it makes 1K only.")
        if image_size not in IMAGE_SIZES:
            raise InvalidRequest(
                f"imageConfig.imageSize must be one of {', '.join(IMAGE_SIZES)}, got {image_size!r}"
            )
    return modalities, ratio, image_size


def _check_tools(body: dict[str, Any], spec: ModelSpec, modalities: frozenset[str]) -> None:
    if "tools" not in body:
        return
    if not spec.accepts_generation_options:
        raise InvalidRequest(f"tools are not supported for {spec.name}; leave them out.")
    if body["tools"] != [{"google_search": {}}]:
        raise InvalidRequest(f'tools must be [{{"google_search": {{}}}}], got {body["tools"]!r}')
    if "TEXT" not in modalities:
        raise InvalidRequest('the google_search tool needs responseModalities ["TEXT", "IMAGE"].')


def _check_contents(body: dict[str, Any]) -> tuple[str, list[tuple[str, str]]]:
    """The prompt and the ``(mime_type, base64)`` of each reference image in ``contents[0]``."""
    contents = body.get("contents")
    if not isinstance(contents, list) or not contents:
        raise InvalidRequest("contents must be a non-empty list.")
    for index, content in enumerate(contents):
        require_dict(content, f"contents[{index}]")
        check_keys(content, {"role", "parts"}, f"contents[{index}]")
        if not isinstance(content.get("parts"), list) or not content["parts"]:
            raise InvalidRequest(f"contents[{index}].parts must be a non-empty list.")
    parts = contents[0]["parts"]
    first = parts[0]
    if not isinstance(first, dict) or set(first) != {"text"} or not isinstance(first["text"], str):
        raise InvalidRequest('contents[0].parts[0] must be {"text": prompt}.')
    prompt = first["text"]
    if not prompt.strip():
        raise InvalidRequest("contents[0].parts[0].text (the prompt) is empty.")
    images = []
    for index, part in enumerate(parts[1:], start=1):
        where = f"contents[0].parts[{index}]"
        if (
            not isinstance(part, dict)
            or len(part) != 1
            or next(iter(part)) not in ("inline_data", "inlineData")
        ):
            raise InvalidRequest(f'{where} must be {{"inline_data": {{"mime_type": ..., "data": ...}}}}.')
        blob = require_dict(next(iter(part.values())), f"{where}.inline_data")
        mime_keys = [k for k in ("mime_type", "mimeType") if k in blob]
        if len(mime_keys) != 1 or set(blob) != {mime_keys[0], "data"}:
            raise InvalidRequest(f"{where}.inline_data must have exactly mime_type and data.")
        mime, data = blob[mime_keys[0]], blob["data"]
        if mime not in IMAGE_MIME_TYPES:
            raise InvalidRequest(
                f"{where}: unsupported mime_type {mime!r}; use one of {', '.join(sorted(IMAGE_MIME_TYPES))}."
            )
        if not isinstance(data, str) or not data:
            raise InvalidRequest(f"{where}.inline_data.data must be a non-empty base64 string.")
        images.append((mime, data))
    return prompt, images


async def parse_request(body: dict[str, Any], spec: ModelSpec, decoder: ReferenceDecoder) -> GeminiRequest:
    """Check a ``generateContent`` body for ``spec``; raise :class:`InvalidRequest` if refused."""
    check_keys(body, TOP_LEVEL_FIELDS, "")
    if "model" in body and not isinstance(body["model"], str):
        raise InvalidRequest("model must be a string.")
    if "safetySettings" in body and not isinstance(body["safetySettings"], list):
        raise InvalidRequest("safetySettings must be a list.")
    if "systemInstruction" in body:
        require_dict(body["systemInstruction"], "systemInstruction")
    prompt, blobs = _check_contents(body)
    modalities, ratio, image_size = _check_generation_config(body, spec)
    _check_tools(body, spec, modalities)
    if len(blobs) > MAX_REFERENCE_IMAGES:
        raise InvalidRequest(
            f"too many images: {len(blobs)}; {spec.name} accepts at most {MAX_REFERENCE_IMAGES}."
        )
    try:
        markers = parse_markers(prompt)
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from None
    refs = []
    for index, (mime, data) in enumerate(blobs, start=1):
        try:
            refs.append(await decoder.from_base64(data, mime))
        except ImageDataError as exc:
            raise InvalidRequest(f"contents[0].parts[{index}]: {exc}") from None
    return GeminiRequest(prompt, refs, markers, modalities, ratio, image_size)


# -- the handler -----------------------------------------------------------------------------


async def handle_generate_content(request: web.Request) -> web.StreamResponse:
    """``POST /v1beta/models/{model}:generateContent``."""
    state = state_of(request)
    arrival = time.monotonic()
    model, _, method = request.match_info["name"].partition(":")
    entry = state.begin(request, "gemini", model)
    if method != "generateContent":
        return state.finish(
            entry, google_error(404, "NOT_FOUND", f"Method {method or '(none)'!r} is not found.")
        )
    if "key" in request.query:
        message = "API keys in the URL (?key=) are refused by this server; send the x-goog-api-key header."
        return state.finish(entry, google_error(400, "INVALID_ARGUMENT", message))
    key = request.headers.get("x-goog-api-key")
    verdict = state.check_key(key)
    if verdict == "missing":
        message = "Method doesn't allow unregistered callers. Please use an API key (x-goog-api-key header)."
        return state.finish(entry, google_error(401, "UNAUTHENTICATED", message))
    if verdict == "wrong":
        return state.finish(
            entry, google_error(403, "PERMISSION_DENIED", "API key not valid. Please pass a valid API key.")
        )
    assert key is not None
    entry["key_ok"] = True
    spec = GEMINI_MODELS.get(model)
    if spec is None:
        message = (
            f"models/{model} is not found for API version v1beta, or is not supported for generateContent."
        )
        return state.finish(entry, google_error(404, "NOT_FOUND", message))
    try:
        body = await read_json_object(request)
        if state.config.record_bodies:
            entry["body"] = body
        parsed = await parse_request(body, spec, state.references)
    except InvalidRequest as exc:
        return state.finish(entry, google_error(400, "INVALID_ARGUMENT", exc.message))
    entry["prompt"] = parsed.prompt
    entry["n_images"] = len(parsed.refs)

    key_id = state.key_id(key)
    admission = state.admit(key_id, parsed.prompt, parsed.markers, arrival)
    fault = admission.fault
    if fault == "outage":
        return state.finish(
            entry, google_error(503, "UNAVAILABLE", "The service is currently unavailable."), fault
        )
    if fault == "rpm":
        return state.finish(entry, rate_limited(model, admission.retry_after or 1.0), fault)
    if fault == "perday":
        return state.finish(entry, per_day_exhausted(model), fault)
    try:
        echo = echo_of(parsed.prompt)
    except ValueError as exc:
        return state.finish(entry, google_error(400, "INVALID_ARGUMENT", str(exc)))
    if echo is not None:
        count = prompt_tokens(parsed.prompt, len(parsed.refs))
        reply = await echo_reply(echo, key, "gemini", lambda: _success(state, spec, parsed, count))
        return state.finish(entry, reply, "echo")
    await state.sleep_latency()
    return await _answer(request, state, entry, spec, parsed, fault, key_id)


async def _answer(
    request: web.Request,
    state: MockState,
    entry: dict[str, Any],
    spec: ModelSpec,
    parsed: GeminiRequest,
    fault: str | None,
    key_id: str,
) -> web.StreamResponse:
    """The reply once the request is admitted: a fault's, or a real image."""
    model = spec.name
    prompt_count = prompt_tokens(parsed.prompt, len(parsed.refs))
    if fault == "500":
        return state.finish(entry, google_error(500, "INTERNAL", "Internal error encountered."), fault)
    if fault == "503":
        return state.finish(
            entry, google_error(503, "UNAVAILABLE", "The model is overloaded. Please try again later."), fault
        )
    if fault == "429":
        return state.finish(entry, rate_limited(model, 1.0), fault)
    if fault == "400":
        return state.finish(
            entry, google_error(400, "INVALID_ARGUMENT", "Request contains an invalid argument."), fault
        )
    if fault == "reset":
        state.record(entry, None, fault)
        return reset_connection(request)
    if fault == "safety":
        candidate = {
            "finishReason": "IMAGE_SAFETY",
            "index": 0,
            "finishMessage": "Unable to show the generated image.",
        }
        return state.finish(entry, _reply(model, [candidate], _usage(prompt_count, 0)), fault)
    if fault == "no_image":
        candidate = {"finishReason": "NO_IMAGE", "index": 0}
        return state.finish(entry, _reply(model, [candidate], _usage(prompt_count, 0)), fault)
    if fault == "blocked":
        feedback = {"blockReason": "SAFETY", "safetyRatings": []}
        return state.finish(
            entry, _reply(model, None, _usage(prompt_count, 0), promptFeedback=feedback), fault
        )
    if fault == "text_only":
        text = f"I can describe it, but here is no picture: {parsed.prompt[:60]}"
        candidate = _candidate([{"text": text}])
        return state.finish(entry, _reply(model, [candidate], _usage(prompt_count, len(text) // 4)), fault)
    if fault == "hang":
        state.record(entry, None, fault)
        if await hang(state.stopping, state.config.hang_s):
            return reset_connection(request)
        return await _success(state, spec, parsed, prompt_count)  # already logged as the hang

    response = await _success(state, spec, parsed, prompt_count)
    if fault == "truncate":
        assert isinstance(response.body, bytes)
        state.record(entry, 200, fault)
        return await send_truncated(request, response.body, "application/json")
    state.daily.record_success(key_id)
    return state.finish(entry, response)


def _candidate(parts: list[dict[str, Any]]) -> dict[str, Any]:
    return {"content": {"role": "model", "parts": parts}, "finishReason": "STOP", "index": 0}


async def _success(
    state: MockState, spec: ModelSpec, parsed: GeminiRequest, prompt_count: int
) -> web.Response:
    config = state.config
    size = pixel_size(spec.family, parsed.image_size, parsed.ratio, config.image_scale)
    images = [
        await state.images.render(
            config.image_mode, size, parsed.prompt, parsed.refs, f"#{i + 1}" if i else ""
        )
        for i in range(config.images_per_reply)
    ]
    as_text = config.data_url_in_text
    parts: list[dict[str, Any]] = []
    if "TEXT" in parsed.modalities:
        parts.append({"text": f"Here is the image you asked for ({size[0]}x{size[1]})."})
    if config.thought_images and spec.thinks:
        draft = await state.images.render("solid", size, parsed.prompt, parsed.refs, "thought")
        parts.append(_image_part(draft, as_text, thought=True))
    image_parts = [_image_part(image, as_text) for image in images]
    if config.thought_images and spec.thinks:
        image_parts[0]["thoughtSignature"] = secrets.token_urlsafe(24)
    parts.extend(image_parts)
    usage = _usage(prompt_count, tokens_per_image(spec.family, parsed.image_size) * len(images))
    return _reply(spec.name, [_candidate(parts)], usage)
