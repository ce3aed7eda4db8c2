"""Classifying Gemini replies: a table from reply to error class."""

from __future__ import annotations

import base64
import io
import json

import pytest
from PIL import Image

from batchfuse.errors import FatalError, NoImageError, RejectedError, TransientError
from batchfuse.providers.gemini import classify_error, parse_reply
from batchfuse.providers.http import HttpReply


def reply(status: int, data: dict, headers: dict | None = None) -> HttpReply:
    return HttpReply(status, headers or {}, json.dumps(data).encode(), data, 1.0)


def google_error(code: int, status: str, details: list | None = None) -> dict:
    return {"error": {"code": code, "message": "m", "status": status, "details": details or []}}


def png_b64() -> str:
    buf = io.BytesIO()
    Image.new("RGB", (2, 2)).save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (400, google_error(400, "INVALID_ARGUMENT"), RejectedError),
        (400, google_error(400, "INVALID_ARGUMENT", [{"reason": "API_KEY_INVALID"}]), FatalError),
        (401, google_error(401, "UNAUTHENTICATED"), FatalError),
        (403, google_error(403, "PERMISSION_DENIED"), FatalError),
        (404, google_error(404, "NOT_FOUND"), FatalError),
        (429, google_error(429, "RESOURCE_EXHAUSTED", [
            {"@type": "type.googleapis.com/google.rpc.QuotaFailure",
             "violations": [{"quotaId": "GenerateRequestsPerDayPerProjectPerModel"}]}]), FatalError),
        (429, google_error(429, "RESOURCE_EXHAUSTED"), TransientError),
        (500, google_error(500, "INTERNAL"), TransientError),
        (502, {}, TransientError),
        (503, google_error(503, "UNAVAILABLE"), TransientError),
        (504, {}, TransientError),
    ],
)
def test_error_statuses(status, body, expected):
    assert type(classify_error(reply(status, body))) is expected


def test_retry_delay_takes_the_longer_of_header_and_retry_info():
    err = classify_error(reply(429, google_error(429, "RESOURCE_EXHAUSTED", [
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "7.5s"}]), {"Retry-After": "3"}))
    assert err.retry_after == 7.5


@pytest.mark.parametrize("reason", ["IMAGE_SAFETY", "IMAGE_PROHIBITED_CONTENT", "SAFETY", "PROHIBITED_CONTENT",
                                    "IMAGE_RECITATION"])
def test_safety_finish_reasons_are_rejected(reason):
    with pytest.raises(RejectedError):
        parse_reply(reply(200, {"candidates": [{"content": {"parts": []}, "finishReason": reason}]}))


def test_prompt_block_is_rejected():
    with pytest.raises(RejectedError):
        parse_reply(reply(200, {"promptFeedback": {"blockReason": "OTHER"}}))


@pytest.mark.parametrize("reason", ["NO_IMAGE", "IMAGE_OTHER", "STOP"])
def test_no_image_is_retried_as_no_image(reason):
    with pytest.raises(NoImageError):
        parse_reply(reply(200, {"candidates": [{"content": {"parts": [{"text": "sorry"}]}, "finishReason": reason}]}))


def test_parts_thought_images_text_and_data_urls():
    data = png_b64()
    parsed = parse_reply(reply(200, {
        "candidates": [{"content": {"parts": [
            {"text": "thinking", "thought": True},
            {"inlineData": {"mimeType": "image/png", "data": data}, "thought": True},
            {"text": "here you go"},
            {"inlineData": {"mimeType": "image/png", "data": data}},
            {"text": f"![img](data:image/png;base64,{data})"},
        ]}, "finishReason": "STOP"}],
        "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 1210, "totalTokenCount": 1220},
    }))
    assert len(parsed.images) == 2
    assert parsed.texts == ["here you go"]
    assert (parsed.prompt_tokens, parsed.output_tokens, parsed.total_tokens) == (10, 1210, 1220)


def test_bad_base64_is_transient():
    with pytest.raises(TransientError):
        parse_reply(reply(200, {"candidates": [{"content": {"parts": [{"inlineData": {"data": "!!!"}}]}}]}))
