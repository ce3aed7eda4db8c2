"""batchfuse.jsonscan: a large reply parsed with its image data left as views of the body."""

from __future__ import annotations

import base64
import json
import os

import pytest

from batchfuse.jsonscan import RawString, loads_skeleton

MIN = 64


def reply(*datas: str, text: str = "here it is", spaced: bool = False) -> bytes:
    parts = [{"text": text}] + [{"inlineData": {"mimeType": "image/png", "data": d}} for d in datas]
    body = {"candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": "STOP"}],
            "usageMetadata": {"totalTokenCount": 1290}}
    return json.dumps(body, indent=2 if spaced else None).encode()


def b64(n: int) -> str:
    return base64.b64encode(os.urandom(n)).decode()


@pytest.mark.parametrize("spaced", [False, True])
def test_long_data_values_become_views_and_the_rest_parses_as_json_loads_would(spaced: bool) -> None:
    a, b = b64(300), b64(500)
    body = reply(a, b, "short", spaced=spaced)
    parsed = loads_skeleton(body, min_chars=MIN)
    expected = json.loads(body)
    parts = parsed["candidates"][0]["content"]["parts"]
    assert [type(p["inlineData"]["data"]) for p in parts[1:]] == [RawString, RawString, str]
    assert bytes(parts[1]["inlineData"]["data"].view()) == a.encode()
    assert parts[2]["inlineData"]["data"].text() == b
    for part in parts[1:]:
        data = part["inlineData"]["data"]
        part["inlineData"]["data"] = data.text() if isinstance(data, RawString) else data
    assert parsed == expected


def test_only_values_of_the_named_keys_are_cut() -> None:
    long_text = "x" * 500
    body = reply(b64(300), text=long_text)
    parsed = loads_skeleton(body, min_chars=MIN)
    assert parsed["candidates"][0]["content"]["parts"][0]["text"] == long_text
    tricky = json.dumps({"text": 'a "data": "' + "Q" * 300 + '"', "data": b64(300)}).encode()
    parsed = loads_skeleton(tricky, min_chars=MIN)
    assert isinstance(parsed["text"], str) and isinstance(parsed["data"], RawString)
    assert json.loads(tricky)["text"] == parsed["text"]


@pytest.mark.parametrize(
    "body",
    [
        reply(b64(30)),  # nothing long enough: plain json.loads is as cheap
        reply(b64(300))[:-200],  # truncated inside the data: unterminated string
        json.dumps({"data": "QUJD\\/" * 40}).encode().replace(b"\\\\/", b"\\/"),  # an escape inside
        json.dumps({"text": "\u0000batchfuse-raw-string:0", "data": b64(300)}).encode(),  # spells the marker
    ],
)
def test_falls_back_to_json_loads_when_the_fast_path_does_not_apply(body: bytes) -> None:
    assert loads_skeleton(body, min_chars=MIN) is None


def test_a_body_cut_after_the_data_is_still_invalid_json() -> None:
    body = reply(b64(300))
    with pytest.raises(ValueError):
        loads_skeleton(body[:-3], min_chars=MIN)
