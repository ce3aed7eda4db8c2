"""Google's JSON mapping over raw HTTP: any spelling the real API reads is read, and the mock's
answers to the spellings it must refuse carry Google's messages."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from typing import Any

import pytest

from batchfuse.mock import MockServerThread
from tests.conftest import TEST_KEY
from tests.contract.conftest import image_bytes

PRO = "gemini-3-pro-image-preview"


def post(srv: MockServerThread, body: Any, version: str = "v1beta") -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        f"{srv.url}/{version}/models/{PRO}:generateContent",
        data=json.dumps(body).encode(),
        headers={"x-goog-api-key": TEST_KEY, "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 (loopback)
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def encodings() -> dict[str, str]:
    raw = image_bytes("PNG") + b"\xfb\xff\xfe\xff"  # trailing bytes that need '+/' or '-_' in base64
    std = base64.b64encode(raw).decode()
    url = base64.urlsafe_b64encode(raw).decode()
    assert ("+" in std or "/" in std) and std.endswith("=")
    return {"standard": std, "standard-unpadded": std.rstrip("="), "urlsafe": url,
            "urlsafe-unpadded": url.rstrip("=")}


@pytest.mark.parametrize("encoding", list(encodings()))
def test_snake_case_everywhere_and_every_base64(mock: MockServerThread, encoding: str) -> None:
    body = {
        "contents": [{"role": "user", "parts": [
            {"inline_data": {"mime_type": "image/png", "data": encodings()[encoding]}},
            {"text": "the same chair, in blue"},
        ]}],
        "generation_config": {"response_modalities": ["image"], "seed": "42", "top_k": 3.0,
                              "image_config": {"aspect_ratio": "3:2", "image_size": "2K"},
                              "thinking_config": {"include_thoughts": True}},
        "system_instruction": {"parts": [{"text": "photoreal"}]},
        "safety_settings": [{"category": "HARM_CATEGORY_HATE_SPEECH", "threshold": "BLOCK_NONE"}],
        "tools": None,
    }
    status, reply = post(mock, body)
    assert status == 200, reply
    parts = reply["candidates"][0]["content"]["parts"]
    assert [bool(p.get("thought")) for p in parts] == [True, False]
    assert "thoughtSignature" in parts[-1]
    assert mock.requests()[-1]["n_images"] == 1


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"contents": [{"parts": [{"text": "x"}]}], "generationConfig": {"imageConfig": {"aspect_ratio": "1:1"},
          "image_config": {}}},
         "Invalid JSON payload received. Duplicate value for field 'generation_config.image_config'."),
        ({"contents": [{"parts": [{"text": "x", "inlineData": {"mimeType": "image/png", "data": "AA"}}]}]},
         "oneof field 'data' is already set"),
        ({"contents": [{"role": "system", "parts": [{"text": "x"}]}]}, "Please use a valid role: user, model."),
        ({"contents": [{"parts": [{"text": "x"}]}], "generationConfig": {"seed": "many"}},
         "Invalid value at 'generation_config.seed' (TYPE_INT32), \"many\""),
        ({"contents": [{"parts": [{"inlineData": {"mimeType": "image/png", "data": "@@@"}}]}]},
         "Invalid value at 'contents[0].parts[0].inline_data.data' (TYPE_BYTES)"),
        ({"contents": [{"parts": [{"text": "x"}]}], "prompt": "x"},
         'Invalid JSON payload received. Unknown name "prompt": Cannot find field.'),
        ({"contents": []}, "* GenerateContentRequest.contents: contents is not specified"),
    ],
)
def test_refusals_carry_googles_messages(mock: MockServerThread, body: dict, message: str) -> None:
    status, reply = post(mock, body, version="v1")
    assert status == 400
    assert reply["error"]["status"] == "INVALID_ARGUMENT"
    assert message in reply["error"]["message"]


def test_missing_key_is_403_and_body_limit_is_the_whole_body(mock: MockServerThread) -> None:
    request = urllib.request.Request(
        f"{mock.url}/v1/models/{PRO}:generateContent", data=b"{}", headers={"Content-Type": "application/json"}
    )
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=10)  # noqa: S310 (loopback)
    assert caught.value.code == 403
    assert json.loads(caught.value.read())["error"]["status"] == "PERMISSION_DENIED"
    just_over = {"contents": [{"parts": [{"text": "x" * 20971520}]}]}
    status, reply = post(mock, just_over)
    assert (status, reply["error"]["message"]) == (400, "Request payload size exceeds the limit: 20971520 bytes.")
