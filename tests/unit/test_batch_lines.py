"""A batch result line is judged exactly like an online reply: the same parser (interim thought
images skipped, text, finishReason, usage, safety blocks rejected, no image retried) and the
same error classes, except that one line's 403/404 is retried rather than stopping the job."""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image

from batchfuse.errors import ErrorClass, NoImageError, RejectedError
from batchfuse.providers.gemini_batch import remote_batch, result_line


def png(color: str) -> str:
    buf = io.BytesIO()
    Image.new("RGB", (4, 4), color).save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


def test_a_response_line_keeps_the_final_image_text_and_usage_and_skips_thoughts():
    parts = [
        {"inlineData": {"mimeType": "image/png", "data": png("red")}, "thought": True},
        {"text": "here it is"},
        {"inlineData": {"mimeType": "image/png", "data": png("blue")}, "thoughtSignature": "x"},
    ]
    line = {"key": "item-7#2", "response": {
        "candidates": [{"content": {"parts": parts}, "finishReason": "STOP"}],
        "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 1210, "totalTokenCount": 1220}}}
    result = result_line(line)
    assert result.key == "item-7#2" and result.error is None and result.reply is not None
    assert len(result.reply.images) == 1
    assert Image.open(io.BytesIO(result.reply.images[0])).getpixel((0, 0)) == (0, 0, 255)
    assert result.reply.texts == ["here it is"] and result.reply.finish_reason == "STOP"
    assert (result.reply.prompt_tokens, result.reply.output_tokens, result.reply.total_tokens) == (10, 1210, 1220)


def test_blocks_and_image_less_replies_are_judged_as_online():
    blocked = result_line({"key": "a#1", "response": {"promptFeedback": {"blockReason": "SAFETY"}}})
    assert isinstance(blocked.error, RejectedError) and blocked.error.block_reason == "SAFETY"
    unsafe = result_line({"key": "b#1", "response": {"candidates": [{"finishReason": "IMAGE_SAFETY"}]}})
    assert isinstance(unsafe.error, RejectedError)
    empty = result_line({"key": "c#1", "response": {"candidates": [{"content": {"parts": [{"text": "no"}]}}]}})
    assert isinstance(empty.error, NoImageError)


@pytest.mark.parametrize(("status", "cls"), [
    ("INVALID_ARGUMENT", ErrorClass.rejected),
    ("RESOURCE_EXHAUSTED", ErrorClass.transient),
    ("UNAVAILABLE", ErrorClass.transient),
    ("INTERNAL", ErrorClass.transient),
    ("PERMISSION_DENIED", ErrorClass.transient),  # an expired reference file: upload again, retry
    ("NOT_FOUND", ErrorClass.transient),
])
def test_line_errors_get_the_online_classes(status, cls):
    result = result_line({"key": "k#1", "error": {"code": 3, "message": "m", "status": status}})
    assert result.reply is None and result.error is not None and result.error.error_class is cls


def test_a_line_without_response_or_error_is_transient_and_a_missing_key_is_none():
    result = result_line({"something": 1})
    assert result.key is None and result.error is not None and result.error.error_class is ErrorClass.transient


def test_an_operation_reads_into_a_batch():
    op = {"name": "batches/x1", "done": True, "metadata": {
        "displayName": "batchfuse-j-0123", "state": "BATCH_STATE_SUCCEEDED",
        "batchStats": {"requestCount": "3", "successfulRequestCount": "2", "failedRequestCount": "1"}},
        "response": {"responsesFile": "files/batch-x1"}}
    b = remote_batch(op)
    assert (b.name, b.display_name, b.state, b.request_count, b.succeeded, b.failed, b.result_file) == (
        "batches/x1", "batchfuse-j-0123", "succeeded", 3, 2, 1, "files/batch-x1")
    assert remote_batch({"name": "batches/y", "metadata": {"state": "BATCH_STATE_EXPIRED"}}).state == "expired"
