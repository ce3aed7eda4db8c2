"""Gemini native ``generateContent``: the handler, replies and Google error JSON (request checks in ``gemini_request.py``).

Faithful both ways: what the real service takes is taken (Google's JSON mapping, see
``google_json.py``; the models, sizes and ratios of the catalog), and what it refuses is refused
with its status and error shape (20 MB bodies, mismatched or unsupported image types,
``candidateCount`` > 1, a wrong key as 400 ``API_KEY_INVALID``, a missing one as 403), so a
provider bug shows up in the test-suite, not at 3 a.m. The relay's stricter rules for
``gemini-2.5-flash-image`` (no responseModalities, imageSize or tools) come from the catalog.
"""

from __future__ import annotations

import base64
import secrets
import time
from typing import Any

from aiohttp import web

from batchfuse.model_catalog import ModelEntry

from .echo import echo_of, echo_reply
from .file_store import files_of
from .gemini_request import GeminiRequest, parse_request
from .images import RenderedImage
from .models import THOUGHT_IMAGES_PER_REPLY, gemini_model, pixel_size, prompt_tokens, tokens_per_image
from .state import MockState, state_of
from .validation import InvalidRequest, read_json_object

#: Largest ``generateContent`` body the API takes: 20 MB, inline images counted as base64.
MAX_BODY_BYTES = 20 * 1024 * 1024
TOO_LARGE = f"Request payload size exceeds the limit: {MAX_BODY_BYTES} bytes."
API_VERSIONS = ("v1", "v1beta")

QUOTA_METRIC = "generativelanguage.googleapis.com/generate_content_requests"
PER_MINUTE_QUOTA = "GenerateRequestsPerMinutePerProjectPerModel"
PER_DAY_QUOTA = "GenerateRequestsPerDayPerProjectPerModel"
#: A wrong key's answer, as the service sends it (400, not 401/403; ErrorInfo API_KEY_INVALID).
KEY_INVALID_MESSAGE = "API key not valid. Please pass a valid API key."
NO_KEY_MESSAGE = (
    "Method doesn't allow unregistered callers (callers without established identity). "
    "Please use API Key or other form of API consumer identity to call this API."
)


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


def key_invalid() -> web.Response:
    """A wrong key: 400 INVALID_ARGUMENT with ErrorInfo reason API_KEY_INVALID, as the service answers
    (body as quoted from the live API in e.g. github.com/cequence-io/openai-scala-client/issues/109)."""
    details = [
        {
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": "API_KEY_INVALID",
            "domain": "googleapis.com",
            "metadata": {"service": "generativelanguage.googleapis.com"},
        },
        {"@type": "type.googleapis.com/google.rpc.LocalizedMessage", "locale": "en-US", "message": KEY_INVALID_MESSAGE},
    ]
    return google_error(400, "INVALID_ARGUMENT", KEY_INVALID_MESSAGE, details)


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


def _usage(prompt_count: int, candidates_count: int, thoughts_count: int = 0) -> dict[str, int]:
    usage = {"promptTokenCount": prompt_count, "candidatesTokenCount": candidates_count}
    if thoughts_count:
        usage["thoughtsTokenCount"] = thoughts_count  # billed as output, counted in the total
    usage["totalTokenCount"] = prompt_count + candidates_count + thoughts_count
    return usage


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


# -- the handler -----------------------------------------------------------------------------


def key_refusal(request: web.BaseRequest, state: MockState) -> web.Response | None:
    """The API's answer to a request without a usable ``x-goog-api-key``, or ``None`` if it has one."""
    if "key" in request.query:
        message = "API keys in the URL (?key=) are refused by this server; send the x-goog-api-key header."
        return google_error(400, "INVALID_ARGUMENT", message)
    verdict = state.check_key(request.headers.get("x-goog-api-key"))
    if verdict == "missing":
        return google_error(403, "PERMISSION_DENIED", NO_KEY_MESSAGE)
    if verdict == "wrong":
        return key_invalid()
    return None


def model_not_found(model: str, version: str, method: str) -> web.Response:
    message = (
        f"models/{model} is not found for API version {version}, or is not supported for "
        f"{method}. Call ListModels to see the list of available models and their supported methods."
    )
    return google_error(404, "NOT_FOUND", message)


#: Canonical status names of the HTTP codes an :class:`InvalidRequest` may carry.
STATUS_NAMES = {400: "INVALID_ARGUMENT", 403: "PERMISSION_DENIED", 404: "NOT_FOUND", 409: "ALREADY_EXISTS"}


def invalid_request(exc: InvalidRequest) -> web.Response:
    """A refused request in Google's envelope (its status, 400 unless it says otherwise)."""
    status = exc.status if exc.status in STATUS_NAMES else 400
    return google_error(status, STATUS_NAMES[status], exc.message)


async def handle_generate_content(request: web.Request) -> web.StreamResponse:
    """``POST /{v1,v1beta}/models/{model}:generateContent`` (google-genai calls ``/v1`` by default)."""
    state = state_of(request)
    arrival = time.monotonic()
    version = request.path.split("/")[1]
    model, _, method = request.match_info["name"].partition(":")
    entry = state.begin(request, "gemini", model)
    if method != "generateContent":
        return state.finish(
            entry, google_error(404, "NOT_FOUND", f"Method {method or '(none)'!r} is not found.")
        )
    refused = key_refusal(request, state)
    if refused is not None:
        return state.finish(entry, refused)
    key = request.headers["x-goog-api-key"]
    entry["key_ok"] = True
    spec = gemini_model(model)
    if spec is None:
        return state.finish(entry, model_not_found(model, version, method))
    files = files_of(request.app)
    try:
        body = await read_json_object(request, MAX_BODY_BYTES, TOO_LARGE)
        if state.config.record_bodies:
            entry["body"] = body
        parsed = await parse_request(body, spec, state.references, files.resolver() if files else None)
    except InvalidRequest as exc:
        return state.finish(entry, invalid_request(exc))
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
        reply = await echo_reply(echo, key, "gemini", lambda: success_reply(state, spec, parsed, count))
        return state.finish(entry, reply, "echo")
    await state.sleep_latency()
    return await _answer(request, state, entry, spec, parsed, fault, key_id)


async def _answer(
    request: web.Request,
    state: MockState,
    entry: dict[str, Any],
    spec: ModelEntry,
    parsed: GeminiRequest,
    fault: str | None,
    key_id: str,
) -> web.StreamResponse:
    """The reply once the request is admitted: a fault's, or a real image."""
    prompt_count = prompt_tokens(parsed.prompt, len(parsed.refs))
    reply = fault_reply(spec.name, parsed, fault, prompt_count)
    if reply is not None:
        return state.finish(entry, reply, fault)
    return await state.deliver(request, entry, fault, key_id, lambda: success_reply(state, spec, parsed, prompt_count))


def fault_reply(model: str, parsed: GeminiRequest, fault: str | None, prompt_count: int) -> web.Response | None:
    """The complete answer a fault gives (an error, or a reply without an image), or ``None``
    for the faults that are not an answer (transport faults) and for no fault at all."""
    if fault == "500":
        return google_error(500, "INTERNAL", "Internal error encountered.")
    if fault == "503":
        return google_error(503, "UNAVAILABLE", "The model is overloaded. Please try again later.")
    if fault == "429":
        return rate_limited(model, 1.0)
    if fault == "400":
        return google_error(400, "INVALID_ARGUMENT", "Request contains an invalid argument.")
    if fault == "safety":
        candidate = {
            "finishReason": "IMAGE_SAFETY",
            "index": 0,
            "finishMessage": "Unable to show the generated image.",
        }
        return _reply(model, [candidate], _usage(prompt_count, 0))
    if fault == "no_image":
        return _reply(model, [{"finishReason": "NO_IMAGE", "index": 0}], _usage(prompt_count, 0))
    if fault == "blocked":
        feedback = {"blockReason": "SAFETY", "safetyRatings": []}
        return _reply(model, None, _usage(prompt_count, 0), promptFeedback=feedback)
    if fault == "text_only":
        text = f"I can describe it, but here is no picture: {parsed.prompt[:60]}"
        return _reply(model, [_candidate([{"text": text}])], _usage(prompt_count, len(text) // 4))
    return None


def _candidate(parts: list[dict[str, Any]]) -> dict[str, Any]:
    return {"content": {"role": "model", "parts": parts}, "finishReason": "STOP", "index": 0}


async def success_reply(
    state: MockState, spec: ModelEntry, parsed: GeminiRequest, prompt_count: int
) -> web.Response:
    """The image reply. A thinking model (catalog ``thought_images``) puts an interim image marked
    ``"thought": true`` first (unless ``includeThoughts`` is false or the mock's
    ``thought_images`` is off), a ``thoughtSignature`` on the first final part, and bills
    ``thoughtsTokenCount`` (DESIGN.md; google-genai ``types.Part.thought`` /
    ``thought_signature``, ``GenerateContentResponseUsageMetadata.thoughts_token_count``)."""
    config = state.config
    size = pixel_size(spec, parsed.image_size, parsed.ratio, config.image_scale)
    images = [
        await state.images.render(
            config.image_mode, size, parsed.prompt, parsed.refs, f"#{i + 1}" if i else ""
        )
        for i in range(config.images_per_reply)
    ]
    as_text = config.data_url_in_text
    per_image = tokens_per_image(spec, parsed.image_size)
    parts: list[dict[str, Any]] = []
    if "TEXT" in parsed.modalities:
        parts.append({"text": f"Here is the image you asked for ({size[0]}x{size[1]})."})
    if spec.thought_images and config.thought_images and parsed.include_thoughts is not False:
        for index in range(THOUGHT_IMAGES_PER_REPLY):
            mode = "noise" if config.image_mode == "noise" else "solid"  # noise: the cached one
            draft = await state.images.render(mode, size, parsed.prompt, parsed.refs, f"thought{index}")
            parts.append(_image_part(draft, as_text, thought=True))
    image_parts = [_image_part(image, as_text) for image in images]
    thoughts = 0
    if spec.thought_images:
        # bytes in protobuf JSON: standard base64 with padding, as the service sends it.
        image_parts[0]["thoughtSignature"] = base64.b64encode(secrets.token_bytes(48)).decode("ascii")
        thoughts = per_image * THOUGHT_IMAGES_PER_REPLY
    parts.extend(image_parts)
    usage = _usage(prompt_count, per_image * len(images), thoughts)
    return _reply(spec.name, [_candidate(parts)], usage)
