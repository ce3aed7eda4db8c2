"""google-genai (the official Python SDK) against the mock: what it sends is taken, what it gets
back parses, and the mock's refusals arrive as the SDK's own exception types.

Where the SDK and the mock disagree, the SDK is right: every test here drives the SDK's public
calls only (``generate_content``, ``Part.from_bytes``, PIL images, ``GenerateContentConfig``).
"""

from __future__ import annotations

import io
from typing import Any

import pytest
from google.genai import errors, types
from PIL import Image

from batchfuse.mock import MockServerThread
from batchfuse.model_catalog import load_catalog, lookup
from tests.contract.conftest import SCALE, genai_client, image_bytes

PRO = "gemini-3-pro-image-preview"
FLASH = "gemini-2.5-flash-image"
FLASH31 = "gemini-3.1-flash-image-preview"
GEMINI_MODELS = [m.name for m in load_catalog().for_provider("gemini")]


def final_images(response: Any) -> list[Image.Image]:
    """The non-thought images of a reply, opened with Pillow."""
    images = []
    for part in response.parts or []:
        if part.inline_data is not None and not part.thought:
            image = Image.open(io.BytesIO(part.inline_data.data))
            image.load()
            images.append(image)
    return images


def expected_px(model: str, size: str, ratio: str) -> tuple[int, int]:
    width, height = lookup(model).pixel_size(size, ratio)  # type: ignore[union-attr]
    return max(8, round(width * SCALE)), max(8, round(height * SCALE))


def image_config(model: str, ratio: str, size: str) -> types.GenerateContentConfig:
    entry = lookup(model)
    assert entry is not None
    image = types.ImageConfig(aspect_ratio=ratio, image_size=size if entry.takes_image_size else None)
    modalities = ["IMAGE"] if entry.takes_response_modalities else None
    return types.GenerateContentConfig(response_modalities=modalities, image_config=image)


# -- every model, ratio and size -------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "size"),
    [(m.name, size) for m in load_catalog().for_provider("gemini") for size in m.sizes],
)
def test_every_ratio_and_size_of_each_model(mock: MockServerThread, model: str, size: str) -> None:
    entry = lookup(model)
    assert entry is not None
    client = genai_client(mock)
    for ratio in entry.aspect_ratios:
        response = client.models.generate_content(
            model=model, contents=f"a lighthouse, {ratio}", config=image_config(model, ratio, size)
        )
        (image,) = final_images(response)
        assert image.size == expected_px(model, size, ratio), (model, size, ratio)
        usage = response.usage_metadata
        assert usage.candidates_token_count == entry.tokens_per_image(size)
        thoughts = usage.thoughts_token_count or 0
        assert usage.total_token_count == usage.prompt_token_count + usage.candidates_token_count + thoughts
        assert response.model_version == model
    assert {e["path"].split("/")[1] for e in mock.requests()} == {"v1"}  # the SDK's default version


# -- text to image, fusion, parts in any order -----------------------------------------------


def test_text_to_image_with_thought_images_and_signature(mock: MockServerThread) -> None:
    client = genai_client(mock)
    response = client.models.generate_content(model=PRO, contents="a red chair")
    parts = response.parts
    thoughts = [p for p in parts if p.thought]
    finals = [p for p in parts if p.inline_data is not None and not p.thought]
    assert thoughts and thoughts[0].inline_data is not None  # an interim image first
    assert parts.index(thoughts[0]) < parts.index(finals[0])
    assert isinstance(finals[0].thought_signature, bytes) and finals[0].thought_signature
    assert response.usage_metadata.thoughts_token_count > 0
    assert response.text  # TEXT+IMAGE is the default


def test_fusion_with_pil_images_and_part_from_bytes_in_any_order(mock: MockServerThread) -> None:
    pil = Image.new("RGB", (20, 20), (10, 200, 10))
    jpeg = types.Part.from_bytes(data=image_bytes("JPEG"), mime_type="image/jpeg")
    webp = types.Part.from_bytes(data=image_bytes("WEBP", (0, 0, 255)), mime_type="image/webp")
    client = genai_client(mock)
    config = types.GenerateContentConfig(
        response_modalities=["IMAGE"], image_config=types.ImageConfig(aspect_ratio="4:3", image_size="2K")
    )
    for contents in (["put the chair in the garden", pil, jpeg, webp], [pil, jpeg, "images first", webp]):
        response = client.models.generate_content(model=PRO, contents=contents, config=config)
        (image,) = final_images(response)
        assert image.size == expected_px(PRO, "2K", "4:3")
    assert [e["n_images"] for e in mock.requests()] == [3, 3]


def test_image_only_request_and_multi_turn_history(mock: MockServerThread) -> None:
    client = genai_client(mock)
    part = types.Part.from_bytes(data=image_bytes(), mime_type="image/png")
    assert final_images(client.models.generate_content(model=FLASH31, contents=[part]))
    history = [
        types.Content(role="user", parts=[types.Part.from_text(text="a cat")]),
        types.Content(role="model", parts=[types.Part.from_text(text="Here it is.")]),
        types.Content(role="user", parts=[types.Part.from_text(text="now make it blue"), part]),
    ]
    assert final_images(client.models.generate_content(model=PRO, contents=history))


def test_generation_config_fields_the_sdk_sends(mock: MockServerThread) -> None:
    config = types.GenerateContentConfig(
        response_modalities=["TEXT", "IMAGE"],
        seed=7,
        temperature=0.4,
        top_p=0.9,
        top_k=20,
        candidate_count=1,
        max_output_tokens=32768,
        system_instruction="You draw product photos.",
        safety_settings=[
            types.SafetySetting(
                category=types.HarmCategory.HARM_CATEGORY_HARASSMENT,
                threshold=types.HarmBlockThreshold.BLOCK_ONLY_HIGH,
            )
        ],
        image_config=types.ImageConfig(aspect_ratio="8:1", image_size="512"),
        thinking_config=types.ThinkingConfig(thinking_level=types.ThinkingLevel.MINIMAL, include_thoughts=True),
    )
    client = genai_client(mock)
    response = client.models.generate_content(model=FLASH31, contents="a banner", config=config)
    (image,) = final_images(response)
    assert image.size == expected_px(FLASH31, "512", "8:1")
    body = mock.requests()[-1]["body"]
    assert body["generationConfig"]["topK"] == 20.0  # the SDK sends a float for an int field


def test_include_thoughts_false_sends_no_thought_images(mock: MockServerThread) -> None:
    config = types.GenerateContentConfig(
        thinking_config=types.ThinkingConfig(thinking_level="HIGH", include_thoughts=False)
    )
    client = genai_client(mock)
    response = client.models.generate_content(model=FLASH31, contents="x", config=config)
    assert not [p for p in response.parts if p.thought]
    assert final_images(response)


@pytest.mark.parametrize("tool", ["google_search", "url_context"])
def test_text_and_image_with_search_and_url_context(mock: MockServerThread, tool: str) -> None:
    tools = {"google_search": types.Tool(google_search=types.GoogleSearch()),
             "url_context": types.Tool(url_context=types.UrlContext())}
    config = types.GenerateContentConfig(response_modalities=["TEXT", "IMAGE"], tools=[tools[tool]])
    for model in (PRO, FLASH31):
        client = genai_client(mock)
        response = client.models.generate_content(
            model=model, contents="today's weather in Paris as an infographic", config=config
        )
        assert response.text
        assert final_images(response)


@pytest.mark.filterwarnings("ignore:Inheritance class AiohttpClientSession:DeprecationWarning")  # the SDK's own
def test_async_client(mock: MockServerThread) -> None:
    import asyncio

    async def go() -> Any:
        client = genai_client(mock)
        return await client.aio.models.generate_content(model=FLASH, contents="a boat")

    assert final_images(asyncio.run(go()))


# -- errors arrive as the SDK's exceptions ---------------------------------------------------


def test_wrong_key_is_400_api_key_invalid(mock: MockServerThread) -> None:
    with pytest.raises(errors.ClientError) as caught:
        client = genai_client(mock, key="not-the-key")
        client.models.generate_content(model=PRO, contents="x")
    assert (caught.value.code, caught.value.status) == (400, "INVALID_ARGUMENT")
    reasons = [d.get("reason") for d in caught.value.details["error"]["details"]]
    assert "API_KEY_INVALID" in reasons


def test_unknown_model_is_404(mock: MockServerThread) -> None:
    with pytest.raises(errors.ClientError) as caught:
        client = genai_client(mock)
        client.models.generate_content(model="gemini-0-image", contents="x")
    assert (caught.value.code, caught.value.status) == (404, "NOT_FOUND")
    assert "not found for API version v1" in caught.value.message


def test_429_carries_retry_info(mock: MockServerThread) -> None:
    with pytest.raises(errors.ClientError) as caught:
        client = genai_client(mock)
        client.models.generate_content(model=PRO, contents="busy [[mock:429]]")
    assert (caught.value.code, caught.value.status) == (429, "RESOURCE_EXHAUSTED")
    details = caught.value.details["error"]["details"]
    retry = [d for d in details if d["@type"] == "type.googleapis.com/google.rpc.RetryInfo"]
    assert retry and retry[0]["retryDelay"].endswith("s")


def test_server_errors_are_server_error(mock: MockServerThread) -> None:
    with pytest.raises(errors.ServerError) as caught:
        client = genai_client(mock)
        client.models.generate_content(model=PRO, contents="down [[mock:503]]")
    assert (caught.value.code, caught.value.status) == (503, "UNAVAILABLE")


def _refused(mock: MockServerThread, model: str, contents: Any, **config: Any) -> errors.ClientError:
    client = genai_client(mock)
    with pytest.raises(errors.ClientError) as caught:
        client.models.generate_content(
            model=model, contents=contents, config=types.GenerateContentConfig(**config) if config else None
        )
    assert (caught.value.code, caught.value.status) == (400, "INVALID_ARGUMENT")
    return caught.value


def test_refuses_what_the_real_api_refuses(mock: MockServerThread) -> None:
    png, jpeg = image_bytes("PNG"), image_bytes("JPEG")
    assert "Multiple candidates" in _refused(mock, PRO, "x", candidate_count=2).message
    mismatch = types.Part.from_bytes(data=jpeg, mime_type="image/png")
    assert "image/png" in _refused(mock, PRO, ["x", mismatch]).message
    gif = types.Part.from_bytes(data=image_bytes("GIF"), mime_type="image/gif")
    assert "Unsupported MIME type: image/gif" in _refused(mock, PRO, ["x", gif]).message
    big = types.Part.from_bytes(data=png + bytes(16 * 1024 * 1024), mime_type="image/png")
    assert _refused(mock, PRO, ["x", big]).message == "Request payload size exceeds the limit: 20971520 bytes."
    ratio = types.ImageConfig(aspect_ratio="8:1")
    assert "aspectRatio" in _refused(mock, PRO, "x", image_config=ratio).message  # 3.1 Flash only
    size = types.ImageConfig(image_size="512")
    assert "imageSize" in _refused(mock, PRO, "x", image_config=size).message
    level = types.ThinkingConfig(thinking_level="LOW")
    assert "thinkingLevel" in _refused(mock, FLASH31, "x", thinking_config=level).message
    assert [e["status"] for e in mock.requests()] == [400] * 7


def test_unknown_field_is_refused_with_googles_message(mock: MockServerThread) -> None:
    client = genai_client(mock, extra_body={"generationConfig": {"imageConfig": {"quality": "best"}}})
    with pytest.raises(errors.ClientError) as caught:
        client.models.generate_content(model=PRO, contents="x")
    assert caught.value.message == (
        'Invalid JSON payload received. Unknown name "quality" at \'generation_config.image_config\': '
        "Cannot find field."
    )


def test_v1beta_is_served_too(mock: MockServerThread) -> None:
    client = genai_client(mock, api_version="v1beta")
    response = client.models.generate_content(model=FLASH, contents="a boat")
    assert final_images(response)
    assert mock.requests()[-1]["path"] == f"/v1beta/models/{FLASH}:generateContent"


@pytest.mark.parametrize("model", GEMINI_MODELS)
def test_every_gemini_model_of_the_catalog_is_served(mock: MockServerThread, model: str) -> None:
    client = genai_client(mock)
    assert final_images(client.models.generate_content(model=model, contents="a kite"))
