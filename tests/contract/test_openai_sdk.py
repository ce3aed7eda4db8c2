"""openai-python (the official SDK) against the mock's OpenAI-compatible images endpoint.

``images.generate`` with ``url`` and ``b64_json``, ``n``, reference images through
``extra_body={"image": [...]}``, and errors parsed into the SDK's own exception classes
(``AuthenticationError``, ``NotFoundError``, ``BadRequestError`` with ``param``,
``RateLimitError`` with the ``x-ratelimit-*`` headers).
"""

from __future__ import annotations

import base64
import io
import urllib.request

import openai
import pytest
from PIL import Image

from batchfuse.mock import MockServerThread
from batchfuse.model_catalog import load_catalog, lookup
from tests.contract.conftest import SCALE, image_bytes, openai_client

PRO = "gemini-3-pro-image-preview"
RELAY_MODELS = [m.name for m in load_catalog().for_provider("openai_images")]


def open_png(raw: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(raw))
    assert image.format == "PNG"
    image.load()
    return image


def expected_px(model: str, ratio: str) -> tuple[int, int]:
    entry = lookup(model)
    assert entry is not None and entry.relay_size is not None
    width, height = entry.pixel_size(entry.relay_size, ratio)
    return max(8, round(width * SCALE)), max(8, round(height * SCALE))


@pytest.mark.parametrize("model", RELAY_MODELS)
def test_b64_json_with_n_for_every_relay_model_and_ratio(mock: MockServerThread, model: str) -> None:
    client = openai_client(mock)
    entry = lookup(model)
    assert entry is not None
    for ratio in entry.aspect_ratios:
        result = client.images.generate(
            model=model, prompt=f"a kite, {ratio}", size=ratio, response_format="b64_json", n=2
        )
        assert len(result.data) == 2
        images = [open_png(base64.b64decode(item.b64_json)) for item in result.data]
        assert {image.size for image in images} == {expected_px(model, ratio)}
        assert isinstance(result.created, int)


def test_url_reply_downloads_a_png(mock: MockServerThread) -> None:
    client = openai_client(mock)
    result = client.images.generate(model=PRO, prompt="a red chair", size="16:9", response_format="url")
    (item,) = result.data
    assert item.url and item.url.startswith(mock.url)
    with urllib.request.urlopen(item.url, timeout=10) as response:  # noqa: S310 (loopback)
        assert open_png(response.read()).size == expected_px(PRO, "16:9")


def test_reference_images_through_extra_body(mock: MockServerThread) -> None:
    client = openai_client(mock)
    refs = [
        "data:image/png;base64," + base64.b64encode(image_bytes("PNG")).decode(),
        "data:image/jpeg;base64," + base64.b64encode(image_bytes("JPEG")).decode(),
    ]
    result = client.images.generate(
        model="gemini-3-pro-image-preview-2k",
        prompt="fuse these",
        size="1:1",
        response_format="b64_json",
        extra_body={"image": refs},
    )
    assert open_png(base64.b64decode(result.data[0].b64_json)).size == expected_px(
        "gemini-3-pro-image-preview-2k", "1:1"
    )
    assert mock.requests()[-1]["n_images"] == 2


def test_wrong_key_is_authentication_error(mock: MockServerThread) -> None:
    client = openai_client(mock, key="not-the-key")
    with pytest.raises(openai.AuthenticationError) as caught:
        client.images.generate(model=PRO, prompt="x")
    assert caught.value.status_code == 401
    assert caught.value.code == "invalid_api_key"


def test_unknown_model_is_not_found_with_param(mock: MockServerThread) -> None:
    client = openai_client(mock)
    with pytest.raises(openai.NotFoundError) as caught:
        client.images.generate(model="dall-e-9", prompt="x")
    assert (caught.value.code, caught.value.param) == ("model_not_found", "model")


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"size": "7:5"}, "size"),
        ({"n": 11}, "n"),
        ({"response_format": "png"}, "response_format"),
        ({"extra_body": {"image": ["ftp://example/x.png"]}}, "image"),
        ({"extra_body": {"quality": "hd"}}, "quality"),
    ],
)
def test_bad_request_names_the_param(mock: MockServerThread, kwargs: dict, param: str) -> None:
    client = openai_client(mock)
    with pytest.raises(openai.BadRequestError) as caught:
        client.images.generate(model=PRO, prompt="x", **kwargs)
    assert caught.value.param == param
    assert caught.value.body["param"] == param


def test_rate_limit_error_carries_ratelimit_headers(mock: MockServerThread) -> None:
    mock.configure(rpm_limit=1)
    client = openai_client(mock)
    client.images.generate(model=PRO, prompt="first", response_format="b64_json")
    with pytest.raises(openai.RateLimitError) as caught:
        client.images.generate(model=PRO, prompt="second", response_format="b64_json")
    headers = caught.value.response.headers
    assert headers["x-ratelimit-limit-requests"] == "1"
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert headers["x-ratelimit-reset-requests"].endswith("s")
    assert int(headers["retry-after"]) >= 1
    assert caught.value.code == "rate_limit_exceeded"
