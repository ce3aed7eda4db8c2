"""The mock API, driven over real HTTP on 127.0.0.1 with aiohttp's client.

Each test checks what a provider author relies on: that a valid request gets a real PNG of the
documented size and token count, that the wire formats are refused where the real service
would refuse them, and that every fault the scheduler must survive can be produced on demand.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from PIL import Image

from batchfuse.mock import MockConfig, MockServer, MockServerThread, create_app

PRO = "gemini-3-pro-image-preview"
FLASH = "gemini-2.5-flash-image"
SCALE = 0.0625  # 1K images come back 64 px wide: real PNGs, fast tests
KEY = "test-key-123"


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def http(
    method: str,
    url: str,
    *,
    body: Any = None,
    raw: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 10,
) -> Reply:
    """One request with a fresh aiohttp session; transport faults surface as aiohttp exceptions."""

    async def go() -> Reply:
        client_timeout = aiohttp.ClientTimeout(total=timeout)
        async with aiohttp.ClientSession(timeout=client_timeout) as session:
            kwargs: dict[str, Any] = {"headers": headers}
            if raw is not None:
                kwargs["data"] = raw
            elif body is not None:
                kwargs["json"] = body
            async with session.request(method, url, **kwargs) as response:
                return Reply(response.status, dict(response.headers), await response.read())

    return asyncio.run(go())


def png_bytes(colour: tuple[int, int, int] = (200, 30, 30), size: tuple[int, int] = (40, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, "PNG")
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def decode_png(data: str | bytes) -> Image.Image:
    raw = base64.b64decode(data) if isinstance(data, str) else data
    image = Image.open(io.BytesIO(raw))
    assert image.format == "PNG"
    image.load()
    return image


def gemini_body(
    prompt: str = "a red chair in a garden", images: int = 0, **generation: Any
) -> dict[str, Any]:
    parts: list[dict[str, Any]] = [{"text": prompt}]
    parts += [{"inline_data": {"mime_type": "image/png", "data": b64(png_bytes())}} for _ in range(images)]
    body: dict[str, Any] = {"contents": [{"role": "user", "parts": parts}]}
    if generation:
        body["generationConfig"] = generation
    return body


def gemini(
    srv: MockServerThread,
    body: dict[str, Any] | None = None,
    *,
    model: str = PRO,
    key: str | None = KEY,
    query: str = "",
    timeout: float = 10,
) -> Reply:
    headers = {"x-goog-api-key": key} if key is not None else {}
    url = f"{srv.url}/v1beta/models/{model}:generateContent{query}"
    return http(
        "POST", url, body=body if body is not None else gemini_body(), headers=headers, timeout=timeout
    )


def openai(srv: MockServerThread, body: dict[str, Any], *, key: str | None = KEY) -> Reply:
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    return http("POST", f"{srv.url}/v1/images/generations", body=body, headers=headers)


def image_parts(reply: Reply) -> list[dict[str, Any]]:
    candidates = reply.json().get("candidates") or [{}]
    parts = candidates[0].get("content", {}).get("parts", [])
    return [p for p in parts if "inlineData" in p]


def assert_served_image(reply: Reply) -> Image.Image:
    assert reply.status == 200, reply.body[:300]
    parts = image_parts(reply)
    assert parts, reply.json()
    return decode_png(parts[-1]["inlineData"]["data"])


@pytest.fixture
def mock() -> Iterator[MockServerThread]:
    with MockServerThread(MockConfig(image_scale=SCALE)) as srv:
        yield srv


# -- Gemini: valid requests ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "image_config", "expected_px", "tokens"),
    [
        (PRO, {}, (64, 64), 1210),
        (PRO, {"aspectRatio": "16:9", "imageSize": "1K"}, (86, 48), 1210),
        (PRO, {"aspectRatio": "2:3", "imageSize": "2K"}, (106, 158), 1210),
        (PRO, {"aspectRatio": "21:9", "imageSize": "4K"}, (396, 168), 2000),
        (FLASH, {"aspectRatio": "3:4"}, (54, 74), 1290),
    ],
)
def test_gemini_reply_is_png_of_table_size_with_tokens(
    mock: MockServerThread,
    model: str,
    image_config: dict[str, str],
    expected_px: tuple[int, int],
    tokens: int,
) -> None:
    generation: dict[str, Any] = {"imageConfig": image_config} if image_config else {}
    if model == PRO:
        generation["responseModalities"] = ["IMAGE"]
    reply = gemini(mock, gemini_body("a chair", images=2, **generation), model=model)

    image = assert_served_image(reply)
    assert image.size == expected_px
    data = reply.json()
    assert data["modelVersion"] == model
    assert data["candidates"][0]["finishReason"] == "STOP"
    usage = data["usageMetadata"]
    assert usage["candidatesTokenCount"] == tokens
    assert usage["promptTokenCount"] >= 2 * 258
    thoughts = usage.get("thoughtsTokenCount", 0)
    assert (thoughts > 0) == (model == PRO)  # Gemini 3 thinks, and the thinking is billed
    assert usage["totalTokenCount"] == usage["promptTokenCount"] + usage["candidatesTokenCount"] + thoughts
    parts = data["candidates"][0]["content"]["parts"]
    has_text = any("text" in p for p in parts)
    assert has_text == (model == FLASH)  # IMAGE only for pro; flash keeps the TEXT+IMAGE default


def test_gemini_text_and_image_with_search_tool(mock: MockServerThread) -> None:
    body = gemini_body(responseModalities=["IMAGE", "TEXT"])
    body["tools"] = [{"google_search": {}}]
    reply = gemini(mock, body)
    parts = reply.json()["candidates"][0]["content"]["parts"]
    assert "text" in parts[0]
    assert_served_image(reply)


def test_gemini_thought_image_data_url_and_several_images(mock: MockServerThread) -> None:
    mock.configure(thought_images=True, images_per_reply=2)
    reply = gemini(mock, gemini_body(responseModalities=["IMAGE"]))
    parts = reply.json()["candidates"][0]["content"]["parts"]
    assert [p.get("thought", False) for p in parts] == [True, False, False]
    assert reply.json()["usageMetadata"]["candidatesTokenCount"] == 2 * 1210
    finals = [decode_png(p["inlineData"]["data"]) for p in parts[1:]]
    assert finals[0].tobytes() != finals[1].tobytes()  # two different pictures, not one twice

    mock.configure(thought_images=False, images_per_reply=1, data_url_in_text=True)
    reply = gemini(mock, gemini_body(responseModalities=["IMAGE"]))
    (part,) = reply.json()["candidates"][0]["content"]["parts"]
    match = re.fullmatch(r"!\[image\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)", part["text"])
    assert match
    assert decode_png(match.group(1)).size == (64, 64)


def test_collage_and_solid_images_differ_by_prompt(mock: MockServerThread) -> None:
    first = assert_served_image(gemini(mock, gemini_body("first prompt", images=1)))
    again = assert_served_image(gemini(mock, gemini_body("first prompt", images=1)))
    other = assert_served_image(gemini(mock, gemini_body("second prompt", images=1)))
    assert first.tobytes() == again.tobytes()
    assert first.tobytes() != other.tobytes()
    mock.configure(image_mode="solid")
    solid = assert_served_image(gemini(mock, gemini_body("first prompt")))
    assert len(solid.convert("RGB").getcolors() or []) == 1


# -- Gemini: strict refusals -----------------------------------------------------------------


def _with(body: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {**body, **top}


def _gif_part() -> dict[str, Any]:
    buf = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buf, "GIF")
    return {"inline_data": {"mime_type": "image/gif", "data": b64(buf.getvalue())}}


@pytest.mark.parametrize(
    ("model", "body"),
    [
        pytest.param(PRO, gemini_body(imageConfig={"aspectRatio": "7:5"}), id="bad-aspect-ratio"),
        pytest.param(PRO, gemini_body(imageConfig={"imageSize": "8K"}), id="bad-image-size"),
        pytest.param(FLASH, gemini_body(imageConfig={"imageSize": "1K"}), id="flash-image-size"),
        pytest.param(FLASH, gemini_body(responseModalities=["IMAGE"]), id="flash-modalities"),
        pytest.param(FLASH, _with(gemini_body(), tools=[{"google_search": {}}]), id="flash-tools"),
        pytest.param(PRO, gemini_body(images=15), id="too-many-images"),
        pytest.param(
            PRO,
            _with(gemini_body(responseModalities=["IMAGE"]), tools=[{"google_search": {}}]),
            id="tools-without-text",
        ),
        pytest.param(PRO, _with(gemini_body(), tools=[{"code_execution": {}}]), id="other-tool"),
        pytest.param(PRO, _with(gemini_body(), prompt="x"), id="unknown-top-level-field"),
        pytest.param(PRO, gemini_body(sead=3), id="unknown-generation-config-field"),
        pytest.param(PRO, gemini_body(candidateCount=2), id="two-candidates"),
        pytest.param(PRO, gemini_body(responseModalities=["TEXT"]), id="text-only-modalities"),
        pytest.param(PRO, {"contents": []}, id="empty-contents"),
        pytest.param(PRO, {"contents": [{"parts": [_gif_part()]}]}, id="image-only-gif"),
        pytest.param(PRO, {"contents": [{"parts": [{"text": "x"}, _gif_part()]}]}, id="gif-mime"),
        pytest.param(
            PRO,
            {
                "contents": [
                    {"parts": [{"text": "x"}, {"inline_data": {"mime_type": "image/png", "data": "%%%"}}]}
                ]
            },
            id="bad-base64",
        ),
        pytest.param(
            PRO,
            {
                "contents": [
                    {
                        "parts": [
                            {"text": "x"},
                            {"inline_data": {"mime_type": "image/png", "data": b64(b"hi")}},
                        ]
                    }
                ]
            },
            id="not-an-image",
        ),
        pytest.param(PRO, gemini_body("draw [[mock:explode]]"), id="misspelt-marker"),
    ],
)
def test_gemini_refuses_invalid_requests(mock: MockServerThread, model: str, body: dict[str, Any]) -> None:
    reply = gemini(mock, body, model=model)
    assert reply.status == 400, reply.body[:300]
    error = reply.json()["error"]
    assert error["code"] == 400
    assert error["status"] == "INVALID_ARGUMENT"
    assert error["message"]
    assert error["details"] == []


def test_gemini_refuses_non_json_key_in_url_and_unknown_model(mock: MockServerThread) -> None:
    url = f"{mock.url}/v1beta/models/{PRO}:generateContent"
    not_json = http("POST", url, raw=b"{not json", headers={"x-goog-api-key": KEY})
    assert (not_json.status, not_json.json()["error"]["status"]) == (400, "INVALID_ARGUMENT")

    in_url = gemini(mock, query=f"?key={KEY}")
    assert (in_url.status, in_url.json()["error"]["status"]) == (400, "INVALID_ARGUMENT")

    unknown = gemini(mock, model="gemini-1.0-pro-vision")
    assert (unknown.status, unknown.json()["error"]["status"]) == (404, "NOT_FOUND")


def test_gemini_api_key_missing_or_wrong() -> None:
    with MockServerThread(MockConfig(api_key="the-only-key", image_scale=SCALE)) as srv:
        missing = gemini(srv, key=None)
        assert (missing.status, missing.json()["error"]["status"]) == (403, "PERMISSION_DENIED")
        wrong = gemini(srv, key="another-key")
        assert (wrong.status, wrong.json()["error"]["status"]) == (400, "INVALID_ARGUMENT")
        assert wrong.json()["error"]["details"][0]["reason"] == "API_KEY_INVALID"
        assert_served_image(gemini(srv, key="the-only-key"))
        assert [e["key_ok"] for e in srv.requests()] == [False, False, True]


# -- fault markers ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "status", "check"),
    [
        ("500", 500, lambda d: d["error"]["status"] == "INTERNAL"),
        ("503", 503, lambda d: d["error"]["status"] == "UNAVAILABLE"),
        ("400", 400, lambda d: d["error"]["status"] == "INVALID_ARGUMENT"),
        ("429", 429, lambda d: d["error"]["details"][-1]["retryDelay"] == "1s"),
        ("safety", 200, lambda d: d["candidates"][0]["finishReason"] == "IMAGE_SAFETY"),
        ("no_image", 200, lambda d: d["candidates"][0]["finishReason"] == "NO_IMAGE"),
        ("blocked", 200, lambda d: d["promptFeedback"]["blockReason"] == "SAFETY" and "candidates" not in d),
        (
            "text_only",
            200,
            lambda d: [list(p) for p in d["candidates"][0]["content"]["parts"]] == [["text"]],
        ),
    ],
)
def test_gemini_marker_fault_then_success(
    mock: MockServerThread, fault: str, status: int, check: Any
) -> None:
    body = gemini_body(f"a lamp [[mock:{fault}]]")
    faulty = gemini(mock, body)
    assert faulty.status == status
    assert check(faulty.json()), faulty.json()
    if status == 200:
        assert not image_parts(faulty)
    if fault == "429":
        assert faulty.headers["Retry-After"] == "1"
    assert_served_image(gemini(mock, body))
    assert [e["fault"] for e in mock.requests()] == [fault, None]


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        ("reset", aiohttp.ServerDisconnectedError),
        ("truncate", aiohttp.ClientPayloadError),
        ("hang", asyncio.TimeoutError),
    ],
)
def test_gemini_transport_fault_then_success(
    mock: MockServerThread, fault: str, error: type[Exception]
) -> None:
    body = gemini_body(f"a vase [[mock:{fault}]]")
    with pytest.raises(error):
        gemini(mock, body, timeout=0.5)
    assert_served_image(gemini(mock, body))
    log = mock.requests()
    assert log[0]["fault"] == fault
    assert log[0]["status"] == (200 if fault == "truncate" else None)


def test_marker_counts_and_sequences(mock: MockServerThread) -> None:
    twice = gemini_body("a [[mock:503*2]]")
    assert [gemini(mock, twice).status for _ in range(3)] == [503, 503, 200]
    forever = gemini_body("b [[mock:500*always]]")
    assert [gemini(mock, forever).status for _ in range(3)] == [500, 500, 500]
    scripted = gemini_body("c [[mock:503]] [[mock:400]]")
    assert [gemini(mock, scripted).status for _ in range(3)] == [503, 400, 200]


def test_per_day_quota_marker_and_config() -> None:
    with MockServerThread(MockConfig(image_scale=SCALE, daily_quota=2)) as srv:
        perday = gemini(srv, gemini_body("x [[mock:perday]]"))
        assert perday.status == 429
        details = perday.json()["error"]["details"]
        assert details[0]["violations"][0]["quotaId"] == "GenerateRequestsPerDayPerProjectPerModel"
        assert not any("RetryInfo" in d["@type"] for d in details)

        assert [gemini(srv).status for _ in range(3)] == [200, 200, 429]
        exhausted = gemini(srv).json()["error"]
        assert exhausted["status"] == "RESOURCE_EXHAUSTED"
        assert (
            exhausted["details"][0]["violations"][0]["quotaId"] == "GenerateRequestsPerDayPerProjectPerModel"
        )
        assert gemini(srv, key="another-key").status == 200  # quotas are per key


def test_rpm_limit_answers_429_with_retry_hints() -> None:
    with MockServerThread(MockConfig(image_scale=SCALE, rpm_limit=2)) as srv:
        assert [gemini(srv).status for _ in range(2)] == [200, 200]
        limited = gemini(srv)
        assert limited.status == 429
        retry_after = int(limited.headers["Retry-After"])
        assert 1 <= retry_after <= 60
        error = limited.json()["error"]
        assert error["status"] == "RESOURCE_EXHAUSTED"
        quota, retry = error["details"]
        assert quota["@type"] == "type.googleapis.com/google.rpc.QuotaFailure"
        assert (
            quota["violations"][0]["quotaMetric"]
            == "generativelanguage.googleapis.com/generate_content_requests"
        )
        assert quota["violations"][0]["quotaId"] == "GenerateRequestsPerMinutePerProjectPerModel"
        assert retry["@type"] == "type.googleapis.com/google.rpc.RetryInfo"
        delay = float(retry["retryDelay"].removesuffix("s"))
        assert 50 < delay <= 60
        assert gemini(srv, key="another-key").status == 200

        # The rejected request took no slot: with room for 3, exactly one more gets through.
        srv.configure(rpm_limit=3)
        assert [gemini(srv).status for _ in range(2)] == [200, 429]
        assert openai(srv, {"model": PRO, "prompt": "x"}).headers["Retry-After"]


def test_rate_429_answers_a_seeded_share_of_requests_with_retry_info() -> None:
    with MockServerThread(MockConfig(image_scale=SCALE, rate_429=0.5, seed=3)) as srv:
        statuses = [gemini(srv).status for _ in range(40)]
        assert set(statuses) == {200, 429} and 10 <= statuses.count(429) <= 30
        srv.configure(rate_429=1.0)
        limited = gemini(srv)
        retry = limited.json()["error"]["details"]
        assert limited.status == 429 and any(d["@type"].endswith("RetryInfo") for d in retry)
        assert openai(srv, {"model": PRO, "prompt": "x"}).status == 429
        srv.configure(rate_429=0.0)
        assert gemini(srv).status == 200


def test_outage_then_recovery_and_seeded_rates(mock: MockServerThread) -> None:
    mock.configure(outage_s=30)
    assert gemini(mock).status == 503
    mock.configure(outage_until=time.monotonic() - 1)
    assert gemini(mock).status == 200

    mock.configure(rate_503=1.0)
    assert gemini(mock).json()["error"]["status"] == "UNAVAILABLE"

    def sequence() -> list[int]:
        with MockServerThread(MockConfig(image_scale=SCALE, seed=7, rate_500=0.3, rate_503=0.3)) as srv:
            return [gemini(srv).status for _ in range(12)]

    first = sequence()
    assert first == sequence()
    assert {500, 503, 200} <= set(first)


# -- OpenAI-compatible images ----------------------------------------------------------------


def test_openai_b64_json_reply() -> None:
    with MockServerThread(MockConfig(image_scale=SCALE)) as srv:
        reply = openai(
            srv,
            {
                "model": "gemini-3-pro-image-preview-2k",
                "prompt": "oil painting",
                "size": "16:9",
                "response_format": "b64_json",
                "image": "data:image/jpeg;base64," + b64(_jpeg()),
            },
        )
        assert reply.status == 200, reply.body[:300]
        data = reply.json()
        assert isinstance(data["created"], int)
        (item,) = data["data"]
        assert decode_png(item["b64_json"]).size == (172, 96)
        assert srv.requests()[-1]["n_images"] == 1


def _jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (10, 120, 200)).save(buf, "JPEG")
    return buf.getvalue()


def test_openai_url_reply_n3_and_expiry() -> None:
    with MockServerThread(MockConfig(image_scale=SCALE)) as srv:
        reply = openai(srv, {"model": PRO, "prompt": "three of them", "n": 3, "size": "1x1"})
        urls = [item["url"] for item in reply.json()["data"]]
        assert len(set(urls)) == 3
        assert all(u.startswith(f"{srv.url}/results/") and ".png?Expires=" in u for u in urls)
        for url in urls:
            got = http("GET", url)
            assert got.status == 200
            assert got.headers["Content-Type"] == "image/png"
            assert decode_png(got.body).size == (64, 64)
        srv.configure(url_ttl_s=0)  # a result made now has already expired
        instant = openai(srv, {"model": PRO, "prompt": "gone at once", "size": "1x1"}).json()["data"][0]["url"]
        gone = http("GET", instant)
        assert gone.status == 403  # as a signed link answers once it has expired
        assert b"<Message>Request has expired</Message>" in gone.body
        srv.faults(expire_results=True)  # and the test can expire all results when it likes
        expired = http("GET", urls[0])  # its own Expires is a day away: the store expired it
        assert expired.status == 403
        assert b"<Message>Request has expired</Message>" in expired.body
        assert http("GET", f"{srv.url}/results/never-made.png").status == 404  # unknown, not expired
        assert [e["api"] for e in srv.requests()] == [
            "openai",
            "download",
            "download",
            "download",
            "openai",
            "download",
            "download",
            "download",
        ]


def test_openai_download_fail_marker(mock: MockServerThread) -> None:
    reply = openai(mock, {"model": PRO, "prompt": "flaky storage [[mock:download_fail]]"})
    assert reply.status == 200
    url = reply.json()["data"][0]["url"]
    assert http("GET", url).status == 500
    assert http("GET", url).status == 200


@pytest.mark.parametrize(
    ("fault", "status", "code"),
    [
        ("500", 500, "internal_error"),
        ("503", 503, "service_unavailable"),
        ("safety", 400, "content_policy_violation"),
    ],
)
def test_openai_marker_faults(mock: MockServerThread, fault: str, status: int, code: str) -> None:
    body = {"model": PRO, "prompt": f"p [[mock:{fault}]]", "response_format": "b64_json"}
    reply = openai(mock, body)
    assert reply.status == status
    assert reply.json()["error"]["code"] == code
    assert openai(mock, body).status == 200


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"model": PRO, "prompt": "x", "quality": "hd"}, 400, "invalid_request"),
        ({"model": "dall-e-3", "prompt": "x"}, 404, "model_not_found"),
        ({"model": PRO, "prompt": "x", "size": "1024x1024"}, 400, "invalid_request"),
        ({"model": PRO, "prompt": "x", "n": 11}, 400, "invalid_request"),
        ({"model": PRO, "prompt": "x", "response_format": "png"}, 400, "invalid_request"),
        ({"model": PRO, "prompt": "x", "image": []}, 400, "invalid_request"),
        (
            {"model": PRO, "prompt": "x", "image": "data:image/png;base64,bm90IGFuIGltYWdl"},
            400,
            "invalid_image",
        ),
        ({"model": PRO, "prompt": "x", "image": "data:image/bmp;base64,AAAA"}, 400, "invalid_image"),
        ({"model": PRO, "prompt": "x", "image": "ftp://example.com/a.png"}, 400, "invalid_image"),
    ],
)
def test_openai_refuses_invalid_requests(
    mock: MockServerThread, body: dict[str, Any], status: int, code: str
) -> None:
    reply = openai(mock, body)
    assert reply.status == status, reply.body[:300]
    error = reply.json()["error"]
    assert error["code"] == code
    assert error["type"] == "invalid_request_error"


def test_openai_api_key_missing_or_wrong() -> None:
    with MockServerThread(MockConfig(api_key="the-only-key", image_scale=SCALE)) as srv:
        for key in (None, "another-key"):
            reply = openai(srv, {"model": PRO, "prompt": "x"}, key=key)
            assert reply.status == 401
            assert reply.json()["error"]["code"] == "invalid_api_key"
        assert openai(srv, {"model": PRO, "prompt": "x"}, key="the-only-key").status == 200


def test_openai_reference_urls_from_static_dir(tmp_path: Path) -> None:
    (tmp_path / "shoe.png").write_bytes(png_bytes((0, 200, 0), (20, 20)))
    with MockServerThread(MockConfig(image_scale=SCALE, static_dir=str(tmp_path))) as srv:
        served = http("GET", f"{srv.url}/files/shoe.png")
        assert served.status == 200
        assert decode_png(served.body).size == (20, 20)
        assert http("GET", f"{srv.url}/files/none.png").status == 404

        body = {
            "model": PRO,
            "prompt": "shoe on a beach",
            "response_format": "b64_json",
            "image": [f"{srv.url}/files/shoe.png", "https://example.invalid/never-fetched.png"],
        }
        reply = openai(srv, body)
        assert reply.status == 200, reply.body[:300]
        assert srv.requests()[-1]["n_images"] == 2
        missing = openai(srv, {**body, "image": [f"{srv.url}/files/none.png"]})
        assert (missing.status, missing.json()["error"]["code"]) == (400, "invalid_image_url")


# -- log, admin routes, runners --------------------------------------------------------------


def test_log_records_requests_and_never_the_key() -> None:
    secret = "sk-very-secret-value"
    config = MockConfig(api_key=secret, image_scale=SCALE, record_bodies=True)
    with MockServerThread(config) as srv:
        gemini(srv, gemini_body("logged prompt", images=1), key=secret)
        gemini(srv, key=secret, query=f"?key={secret}")
        gemini(srv, key="wrong-key")
        openai(srv, {"model": PRO, "prompt": "openai prompt"}, key=secret)
        log = srv.requests()
        admin_log = http("GET", f"{srv.url}/_mock/log").json()
    assert admin_log == log
    assert secret not in json.dumps(log)
    first = log[0]
    assert first["method"] == "POST"
    assert first["path"] == f"/v1beta/models/{PRO}:generateContent"
    assert (first["api"], first["model"], first["status"], first["fault"]) == ("gemini", PRO, 200, None)
    assert (first["prompt"], first["n_images"], first["key_ok"]) == ("logged prompt", 1, True)
    assert first["body"]["contents"][0]["parts"][0]["text"] == "logged prompt"
    assert isinstance(first["t"], float)
    assert isinstance(first["received"], float) and first["received"] <= first["t"]
    assert [e["status"] for e in log] == [200, 400, 400, 200]
    assert log[3]["api"] == "openai"
    assert log[3]["model"] == PRO
    assert len(srv.requests("/v1/images")) == 1


def test_fault_windows_are_counted_in_requests_or_opened_and_closed(mock: MockServerThread) -> None:
    faults = f"{mock.url}/_mock/faults"
    assert http("POST", faults, body={"outage": 2}).json()["outage"] == 2
    assert [gemini(mock).status for _ in range(3)] == [503, 503, 200]  # exactly two requests
    assert http("POST", faults, body={"outage": "open"}).status == 200
    assert [gemini(mock).status for _ in range(3)] == [503, 503, 503]  # until the test closes it
    assert http("POST", faults, body={"outage": "closed"}).json() == {"outage": "closed", "hold": False, "held": 0}
    assert gemini(mock).status == 200
    for bad in ({"outage": "soon"}, {"outage": -1}, {"hold": 1}, {"hold_after": True}, {"latency": 1}, [1]):
        reply = http("POST", faults, body=bad)
        assert reply.status == 400 and reply.json()["error"], bad


def test_held_requests_wait_at_the_mock_until_released(mock: MockServerThread) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from tests.conftest import wait_for

    mock.faults(hold_after=1)  # one passes, the rest wait
    assert gemini(mock).status == 200
    with ThreadPoolExecutor(3) as pool:
        replies = [pool.submit(gemini, mock) for _ in range(3)]
        wait_for(lambda: mock.faults()["held"] == 3, "three requests held at the mock")
        assert not any(r.done() for r in replies)
        assert mock.faults(hold=False)["held"] == 3  # released now, still counted as they leave
        assert [r.result().status for r in replies] == [200, 200, 200]
    assert mock.faults()["held"] == 0


def test_admin_config_and_reset(mock: MockServerThread) -> None:
    changed = http("POST", f"{mock.url}/_mock/config", body={"rate_503": 1.0, "latency_ms": 1})
    assert changed.status == 200
    assert changed.json()["changed"] == ["latency_ms", "rate_503"]
    assert mock.config.rate_503 == 1.0
    assert gemini(mock).status == 503
    assert http("POST", f"{mock.url}/_mock/config", body={"rate_503": 0, "outage_s": 60}).status == 200
    assert gemini(mock).status == 503
    assert http("POST", f"{mock.url}/_mock/config", body={"outage_s": None}).status == 200
    assert gemini(mock).status == 200

    assert http("POST", f"{mock.url}/_mock/config", body={"no_such_field": 1}).status == 400
    assert http("POST", f"{mock.url}/_mock/config", body={"rate_500": 2}).status == 400

    marked = gemini_body("again [[mock:500]]")
    assert [gemini(mock, marked).status for _ in range(2)] == [500, 200]
    assert http("POST", f"{mock.url}/_mock/reset").json() == {"ok": True}
    assert mock.requests() == []
    assert gemini(mock, marked).status == 500  # marker counters start over
    assert len(http("GET", f"{mock.url}/_mock/log").json()) == 1


def test_async_mock_server_and_create_app() -> None:
    async def scenario() -> tuple[int, int, str]:
        async with MockServer(MockConfig(image_scale=SCALE)) as srv:
            assert srv.url.startswith("http://127.0.0.1:")
            srv.config.rate_500 = 1.0  # live config
            async with aiohttp.ClientSession() as session:
                url = f"{srv.url}/v1beta/models/{PRO}:generateContent"
                async with session.post(url, json=gemini_body(), headers={"x-goog-api-key": KEY}) as response:
                    status = response.status
            return status, len(srv.log), srv.log[0]["fault"]

    assert asyncio.run(scenario()) == (500, 1, "500")
    assert create_app(MockConfig()).router is not None


def test_python_dash_m_mock_server_serves_until_sigterm() -> None:
    env = {**os.environ, "MOCK_TEST_KEY": "cli-key"}
    command = [sys.executable, "-m", "batchfuse.mock", "--port", "0", "--image-scale", str(SCALE)]
    command += ["--image-mode", "solid", "--api-key-env", "MOCK_TEST_KEY"]
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    ) as process:
        try:
            assert process.stdout is not None
            line = process.stdout.readline()
            match = re.fullmatch(r"mock API listening on (http://127\.0\.0\.1:(\d+))\n", line)
            if not match:
                process.kill()
                pytest.fail(f"unexpected first line {line!r}; stderr: {process.communicate()[1]}")
            assert int(match.group(2)) > 0
            url = f"{match.group(1)}/v1beta/models/{PRO}:generateContent"
            assert http("POST", url, body=gemini_body(), headers={"x-goog-api-key": "cli-key"}).status == 200
            assert http("POST", url, body=gemini_body(), headers={"x-goog-api-key": "other"}).status == 400
            process.send_signal(signal.SIGTERM)
            _, err = process.communicate(timeout=30)
            assert process.returncode == 0, err
        finally:
            if process.poll() is None:
                process.kill()


def test_a_cjk_prompt_is_written_in_a_cjk_font_or_as_its_digest_never_as_boxes(monkeypatch, mock) -> None:
    from batchfuse.mock import images

    prompt = "让第二张图的计算器在第一张图中吃饭"
    monkeypatch.setattr(images, "CJK_FONTS", ("/nonexistent/font.ttc",))  # no CJK font here
    text, _, _ = images.caption(prompt, 12)
    assert text.startswith("prompt sha256 ") and images._latin(text)
    assert images.caption("a museum poster", 12)[0] == "a museum poster"
    assert gemini(mock, gemini_body(prompt)).status == 200  # the image is drawn all the same
    font_file = next(Path("/usr/share/fonts").rglob("*.tt[fc]"), None)
    if font_file is not None:  # a font file stands in for a CJK one: the prompt itself is written
        monkeypatch.setattr(images, "CJK_FONTS", ("/nonexistent/font.ttc", str(font_file)))
        text, font, em = images.caption(prompt, 12)
        assert text == prompt and font.path == str(font_file) and em == 1.0
