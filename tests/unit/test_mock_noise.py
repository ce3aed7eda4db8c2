"""The mock's ``noise`` image mode: real-entropy PNGs of the catalog's pixel size, one per size."""

from __future__ import annotations

import base64
import io
import json
import urllib.request

from PIL import Image

from batchfuse.mock import MockConfig, MockServerThread
from batchfuse.model_catalog import lookup

PRO = "gemini-3-pro-image-preview"
SCALE = 0.125


def _generate(srv: MockServerThread, prompt: str, size: str, ratio: str) -> list[bytes]:
    body = {
        "contents": [{"parts": [{"text": prompt}]}],
        "generationConfig": {"responseModalities": ["IMAGE"], "imageConfig": {"aspectRatio": ratio, "imageSize": size}},
    }
    request = urllib.request.Request(
        f"{srv.url}/v1beta/models/{PRO}:generateContent", data=json.dumps(body).encode(), method="POST",
        headers={"Content-Type": "application/json", "x-goog-api-key": "k"},
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=30) as resp:
        parts = json.loads(resp.read())["candidates"][0]["content"]["parts"]
    return [base64.b64decode(p["inlineData"]["data"]) for p in parts if "inlineData" in p and not p.get("thought")]


def test_noise_images_have_catalog_size_real_entropy_and_are_cached_per_size() -> None:
    entry = lookup(PRO)
    assert entry is not None
    with MockServerThread(MockConfig(image_mode="noise", image_scale=SCALE, thought_images=False)) as srv:
        (a,) = _generate(srv, "first prompt", "4K", "16:9")
        (b,) = _generate(srv, "another prompt entirely", "4K", "16:9")
        (c,) = _generate(srv, "first prompt", "2K", "1:1")
    width, height = entry.pixel_size("4K", "16:9")
    with Image.open(io.BytesIO(a)) as im:
        im.load()
        assert im.size == (round(width * SCALE), round(height * SCALE))
        raw_bytes = im.width * im.height * 3
    assert a == b  # one render per size, whatever the prompt
    assert a != c
    # Real-entropy: the PNG keeps roughly 40% of the raw pixels' size (a solid image keeps <1%).
    assert 0.3 < len(a) / raw_bytes < 0.6
