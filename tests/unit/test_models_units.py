"""Small pure pieces of issue 14: variant output names, fitting steps, seeds, model resolution."""

from __future__ import annotations

import io
import os

import pytest
from PIL import Image

from batchfuse.images import encode_fitted, fit_steps
from batchfuse.model_catalog import ModelInfo, lookup, resolve
from batchfuse.outputs.names import output_name
from batchfuse.plan.planner import derived_seed, variants
from batchfuse.records import ImageRef, ItemSpec


@pytest.mark.parametrize(("template", "values", "n", "count", "expected"), [
    ("{item}.png", {"item": "mug", "variant": 2}, 1, 1, "mug-2.png"),
    ("{item}_{n}.png", {"item": "mug", "variant": 2}, 1, 1, "mug_2.png"),
    ("{item}/v{variant}.png", {"item": "mug", "variant": 3}, 1, 1, "mug/v3.png"),
    ("{item}.png", {"item": "mug", "variant": 2}, 2, 3, "mug-2-2.png"),  # a reply with extra images
    ("{item}.png", {"item": "mug"}, 1, 1, "mug.png"),
    ("{item}.png", {"item": "mug"}, 2, 2, "mug-2.png"),
])
def test_variant_output_names(template, values, n, count, expected):
    assert output_name(template, values, n, count) == expected


def test_fit_steps_go_from_gentle_to_small():
    assert fit_steps(3072)[0] == "3072px-q90" and fit_steps(3072)[-1] == "512px-q70"
    assert all(int(s.split("px")[0]) <= 1000 for s in fit_steps(1000))


def test_fitted_encoding_is_deterministic_and_keeps_transparency():
    noise = Image.frombytes("RGB", (900, 600), os.urandom(900 * 600 * 3))
    data = io.BytesIO()
    noise.save(data, "PNG")
    first = encode_fitted(data.getvalue(), "512px-q70")
    assert first == encode_fitted(data.getvalue(), "512px-q70")
    assert first[0] == "image/jpeg"
    with Image.open(io.BytesIO(first[1])) as im:
        assert max(im.size) == 512
    clear = io.BytesIO()
    Image.new("RGBA", (64, 64), (255, 0, 0, 0)).save(clear, "PNG")
    assert encode_fitted(clear.getvalue(), "512px-q70")[0] == "image/webp"


def test_seeds_of_variants_and_auto():
    spec = ItemSpec(prompt="p", params={"seed": "auto"}, images=(ImageRef("a.png", "d"),), vars={"item": "k"})
    (only,) = variants("k", spec, 1)
    assert only == ("k", ItemSpec("p", {"seed": derived_seed("k")}, spec.images, spec.vars))
    rows = variants("k", ItemSpec("p", {"seed": 2**31 - 1}), 3)
    assert [key for key, _ in rows] == ["k#1", "k#2", "k#3"]
    assert [s.params["seed"] for _, s in rows] == [2**31 - 1, 0, 1]  # wraps within int32
    assert [s.vars["variant"] for _, s in rows] == [1, 2, 3]
    assert derived_seed("k") == derived_seed("k") != derived_seed("k2")


def test_resolve_unlisted_declared_and_listed():
    assert resolve("gemini-2.5-flash-image", "gemini") is lookup("gemini-2.5-flash-image")
    assert not resolve("gemini-2.5-flash-image", "openai_images").checked  # the catalog lists it for gemini only
    declared = resolve("x", "gemini", ModelInfo(sizes=["2K"]))
    assert declared.checked and declared.sizes == ("2K",) and declared.origin == "model_info"
    over = resolve("gemini-3-pro-image-preview", "gemini", ModelInfo(max_reference_images=3))
    assert over.max_reference_images == 3 and over.sizes == ("1K", "2K", "4K")


def test_size_512_may_be_written_unquoted():
    from batchfuse.providers.gemini import GeminiParams

    assert GeminiParams(image_size=512).image_size == "512"
    info = ModelInfo.model_validate({"sizes": [512, "1K"], "price_per_image_usd": {"online": {512: 0.01}},
                                     "output_tokens_per_image": {512: 700}})
    assert info.sizes == ["512", "1K"] and info.output_tokens_per_image == {"512": 700}
    assert resolve("x", "gemini", info).price_per_image("512") == 0.01
