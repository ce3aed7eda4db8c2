"""The model catalog: every fact cites a source, and the providers read their rules from it."""

from __future__ import annotations

import json
from importlib import resources

import pytest

from batchfuse.model_catalog import CatalogError, load_catalog, lookup, parse_catalog
from batchfuse.providers import gemini, openai_images


def raw_catalog() -> dict:
    return json.loads(resources.files("batchfuse").joinpath("model_catalog.json").read_text("utf-8"))


def test_required_models_and_their_facts() -> None:
    catalog = load_catalog()
    assert {"gemini-3-pro-image-preview", "gemini-2.5-flash-image", "gemini-3.1-flash-image-preview",
            "gemini-3-pro-image-preview-2k", "gemini-3-pro-image-preview-4k"} <= set(catalog.models)
    flash31 = lookup("gemini-3.1-flash-image-preview")
    assert flash31 is not None
    assert {"1:4", "4:1", "1:8", "8:1"} <= set(flash31.aspect_ratios)
    assert flash31.sizes == ("512", "1K", "2K", "4K")
    assert flash31.thinking_levels == ("minimal", "high") and flash31.include_thoughts
    four_k = lookup("gemini-3-pro-image-preview-4k")
    assert four_k is not None and four_k.relay_size == "4K" and four_k.tokens_per_image("4K") == 2000
    assert four_k.price_per_image("4K") is None  # the relay's price is not known: not invented
    assert lookup("no-such-model") is None


def test_every_fact_cites_a_known_source() -> None:
    data = raw_catalog()
    del data["models"]["gemini-2.5-flash-image"]["sources"]["price_per_image_usd"]
    with pytest.raises(CatalogError, match="price_per_image_usd"):
        parse_catalog(data)
    data = raw_catalog()
    data["models"]["gemini-2.5-flash-image"]["sources"]["sizes"] = "a-blog-post"
    with pytest.raises(CatalogError, match="sizes"):
        parse_catalog(data)


def test_the_providers_take_their_rules_from_the_catalog() -> None:
    catalog = load_catalog()
    assert {m.name for m in catalog.for_provider("openai_images")} == set(openai_images.MODELS)
    assert set(gemini.GeminiProvider.MODELS) == {m.name for m in catalog.for_provider("gemini")}
    for name in gemini.GeminiProvider.MODELS:
        entry = lookup(name)
        assert entry is not None
        assert gemini.GeminiProvider.entry(name) is entry
        for size in entry.sizes:
            assert entry.tokens_per_image(size) == gemini.GeminiProvider.tokens_per_image(name, {"image_size": size})
    for name in openai_images.MODELS:
        entry = lookup(name)
        assert entry is not None and entry.relay_size is not None
        assert entry.tokens_per_image(entry.relay_size) == openai_images.OpenAIImagesProvider.tokens_per_image(name, {})
        assert entry.max_reference_images == openai_images.MAX_IMAGES
