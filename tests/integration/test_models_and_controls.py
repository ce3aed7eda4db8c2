"""Models as data, through the CLI against the mock: the catalog (`batchfuse models`), a model
the catalog does not list (one warning; `provider.model_info`; the API's answer decides),
gemini-3.1-flash-image-preview end to end, and the generation controls reaching the request
body and the spec."""

from __future__ import annotations

import json

from batchfuse.model_catalog import load_catalog
from batchfuse.plan.planner import derived_seed
from tests.conftest import cli, generation_requests, manifest

FLASH31 = "gemini-3.1-flash-image-preview"


def _provider(mock, model, **extra):
    return {"kind": "gemini", "base_url": mock.url, "model": model, "api_key_env": "DMXAPI_KEY", **extra}


def test_models_lists_the_catalog_as_text_and_json():
    text = cli("models")
    assert text.exit_code == 0, text.stderr
    for name in load_catalog().models:
        assert name in text.stdout
    assert "ratios 1:1 1:4 1:8" in text.stdout and "sizes 512 1K 2K 4K" in text.stdout
    assert "1K $0.134 (batch $0.067)" in text.stdout  # 3 Pro Image, online and batch
    result = cli("models", "--json")
    assert result.exit_code == 0, result.stderr
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    assert set(rows) == set(load_catalog().models)
    flash = rows[FLASH31]
    assert flash["providers"] == ["gemini"] and flash["max_reference_images"] == 14
    assert {"1:4", "4:1", "1:8", "8:1"} <= set(flash["aspect_ratios"])
    assert flash["price_per_image_usd"]["online"]["512"] == 0.045
    assert flash["max_request_bytes"] == 20971520
    assert rows["gemini-3-pro-image-preview-4k"]["providers"] == ["openai_images"]


def test_an_unlisted_model_warns_once_and_the_api_decides(job, mock):
    job.write(manifest(mock.url, [{"id": "a", "prompt": "p"}, {"id": "b", "prompt": "q", "aspect_ratio": "7:3"}],
                       provider=_provider(mock, "acme-image-9"), limits={"concurrency": 1}))
    result = cli("validate", job.manifest)
    assert result.exit_code == 0, result.stderr
    warning = "warning: model acme-image-9 is not in the catalog: rules and prices unchecked"
    assert result.stderr.count(warning) == 1, result.stderr
    assert result.stderr.count("warning:") == 1
    # unchecked: a ratio no catalog model takes goes to the API as it is
    assert '"aspectRatio": "1:1"' in result.stdout
    # the mock does not serve it: 404 NOT_FOUND is fatal, the run stops and nothing is retried
    run = cli("run", job.manifest)
    assert run.exit_code == 3, run.stderr
    assert "404" in run.stderr and "acme-image-9" in run.stderr
    assert run.stderr.count("model acme-image-9 is not in the catalog: rules and prices unchecked") == 1
    assert job.sql("SELECT DISTINCT outcome, http_status FROM attempts") == [("fatal", 404)]
    assert set(job.state_of().values()) == {"pending"}


def test_an_unlisted_relay_model_is_allowed_too(job, mock):
    provider = {"kind": "openai_images", "base_url": mock.url, "model": "relay-image-x", "api_key_env": "DMXAPI_KEY"}
    data = manifest(mock.url, [{"id": "a", "prompt": "p"}], provider=provider)
    data["defaults"] = {"size": "16:9"}
    job.write(data)
    result = cli("validate", job.manifest)
    assert result.exit_code == 0, result.stderr
    assert "model relay-image-x is not in the catalog" in result.stderr
    run = cli("run", job.manifest)
    assert run.exit_code == 3, run.stderr  # model_not_found
    (req,) = generation_requests(mock)
    assert req["body"]["model"] == "relay-image-x"


def test_model_info_declares_the_rules_of_an_unlisted_model(job, mock):
    info = {"sizes": ["2K"], "aspect_ratios": ["1:1", "3:1"], "max_reference_images": 1,
            "output_tokens_per_image": {"2K": 1500}, "price_per_image_usd": {"online": {"2K": 0.5}}}
    items = [{"id": "a", "prompt": "p", "aspect_ratio": "3:1"}]
    job.write(manifest(mock.url, items, provider=_provider(mock, "acme-image-9", model_info=info),
                       defaults={"image_size": "2K"}))
    result = cli("validate", job.manifest)
    assert result.exit_code == 0, result.stderr
    assert "warning" not in result.stderr  # declared: checked
    assert "estimate: 1 image, 1,500 output tokens, about $0.50 at the catalog's list prices" in result.stdout
    # its rules are enforced like a catalog entry's
    job.write(manifest(mock.url, [{"id": "a", "prompt": "p", "aspect_ratio": "16:9",
                                   "images": ["images/scene.png", "images/logo.png"]}],
                       provider=_provider(mock, "acme-image-9", model_info=info), defaults={"image_size": "2K"}))
    bad = cli("validate", job.manifest)
    assert bad.exit_code == 2
    assert "item a: images: 2 reference images; acme-image-9 takes at most 1" in bad.stderr
    assert "item a: aspect_ratio: must be one of 1:1, 3:1 (got '16:9')" in bad.stderr
    # a default it does not take is said once, at defaults
    job.write(manifest(mock.url, [{"id": "a", "prompt": "p"}], provider=_provider(mock, "acme-image-9", model_info=info)))
    once = cli("validate", job.manifest)
    assert once.stderr == "error: job.yaml: defaults.image_size: acme-image-9 makes 2K images only\n".replace(
        "job.yaml", str(job.manifest)), once.stderr


def test_an_unlisted_model_with_declared_rules_runs_where_the_api_serves_it(job, mock):
    # the API (here the mock, told to serve the name like 3 Pro Image) knows a model the catalog does not
    mock.configure(model_aliases={"acme-image-9": "gemini-3-pro-image-preview"}, image_scale=0.05)
    info = {"sizes": ["1K", "2K"], "aspect_ratios": ["1:1", "16:9"], "max_reference_images": 2,
            "output_tokens_per_image": {"1K": 1120, "2K": 1120}, "price_per_image_usd": {"online": {"1K": 0.1}}}
    items = [{"id": "wide", "prompt": "p", "aspect_ratio": "16:9", "images": ["images/scene.png"]},
             {"id": "square", "prompt": "q", "aspect_ratio": "1:1"}]
    job.write(manifest(mock.url, items, provider=_provider(mock, "acme-image-9", model_info=info)))
    assert cli("validate", job.manifest).exit_code == 0
    run = cli("run", job.manifest)
    assert run.exit_code == 0, run.stderr
    assert set(job.state_of().values()) == {"succeeded"}
    assert [r["model"] for r in generation_requests(mock)] == ["acme-image-9"] * 2
    sizes = dict(job.sql("SELECT i.key, o.width * 1.0 / o.height FROM outputs o JOIN items i ON i.id = o.item_id"))
    assert float(sizes["square"]) == 1.0 and abs(float(sizes["wide"]) - 16 / 9) < 0.05


def test_model_info_is_validated_strictly(job, mock):
    cases = [
        ({"sizes": ["8K"]}, "provider.model_info.sizes[0]: must be one of 512, 1K, 2K, 4K (got '8K')"),
        ({"max_reference_images": "many"}, "provider.model_info.max_reference_images: must be a whole number"),
        ({"aspect_ratios": ["wide"]}, "provider.model_info.aspect_ratios: 'wide' is not a ratio like 16:9"),
        ({"price_per_image_usd": {"online": {"1K": "cheap"}}}, "provider.model_info.price_per_image_usd.online.1K: must be a number"),
        ({"thinking_level": ["high"]}, "provider.model_info.thinking_level: unknown key (did you mean 'thinking_levels'?)"),
    ]
    for info, expected in cases:
        job.write(manifest(mock.url, [{"id": "a", "prompt": "p"}], provider=_provider(mock, "acme-image-9", model_info=info)))
        result = cli("validate", job.manifest)
        assert result.exit_code == 2, result.stderr
        assert result.stderr.startswith(f"error: {job.manifest}: {expected}"), result.stderr
        assert len(result.stderr.splitlines()) == 1
    assert generation_requests(mock) == []


def test_flash_31_runs_with_its_ratios_sizes_and_thinking_levels(job, mock):
    items = [
        {"id": f"r{i}", "prompt": f"banner {ratio}", "aspect_ratio": ratio, "image_size": size, "thinking_level": level}
        for i, (ratio, size, level) in enumerate(
            [("1:4", "512", "minimal"), ("4:1", "1K", "high"), ("1:8", "2K", "minimal"), ("8:1", "512", "high")]
        )
    ]
    job.write(manifest(mock.url, items, provider=_provider(mock, FLASH31), defaults={"include_thoughts": True}))
    result = cli("validate", job.manifest)
    assert result.exit_code == 0, result.stderr
    assert "warning" not in result.stderr
    run = cli("run", job.manifest)
    assert run.exit_code == 0, run.stderr
    assert set(job.state_of().values()) == {"succeeded"}
    sent = {r["prompt"]: r["body"]["generationConfig"] for r in generation_requests(mock)}
    assert all(r["path"] == f"/v1beta/models/{FLASH31}:generateContent" for r in generation_requests(mock))
    for item in items:
        config = sent[item["prompt"]]
        assert config["imageConfig"] == {"aspectRatio": item["aspect_ratio"], "imageSize": item["image_size"]}
        assert config["thinkingConfig"] == {"thinkingLevel": item["thinking_level"], "includeThoughts": True}
    # outputs have the catalog's pixel sizes (the mock scales them by 1/16)
    entry = load_catalog().models[FLASH31]
    for key, width, height in job.sql("SELECT items.key, width, height FROM outputs JOIN items ON items.id = item_id"):
        item = next(i for i in items if i["id"] == key)
        w, h = entry.pixel_size(item["image_size"], item["aspect_ratio"])
        assert (width, height) == (max(8, round(w / 16)), max(8, round(h / 16)))
    # thinking tokens are recorded with the other counts
    thoughts = job.sql("SELECT thoughts_tokens, prompt_tokens + output_tokens + thoughts_tokens, total_tokens FROM attempts")
    assert len(thoughts) == 4 and all(t > 0 and s == total for t, s, total in thoughts)


def test_a_control_the_model_does_not_take_is_one_line_naming_the_field(job, mock):
    cases = [
        ("gemini-3-pro-image-preview", {"thinking_level": "high"},
         "item a: thinking_level: gemini-3-pro-image-preview does not take a thinking level"),
        (FLASH31, {"thinking_level": "medium"}, "item a: thinking_level: must be one of minimal, high for"),
        ("gemini-2.5-flash-image", {"include_thoughts": True},
         "item a: include_thoughts: gemini-2.5-flash-image does not take include_thoughts"),
        (FLASH31, {"seed": -1}, "item a: seed: must be from 0 to 2147483647, or auto"),
        (FLASH31, {"temperature": 3}, "item a: temperature: must be at most 2"),
        (FLASH31, {"safety_settings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "SOMETIMES"}]},
         "item a: safety_settings[0].threshold: must be one of BLOCK_LOW_AND_ABOVE"),
        (FLASH31, {"variants": 0}, "item a: variants: must be at least 1"),
    ]
    for model, params, expected in cases:
        job.write(manifest(mock.url, [{"id": "a", "prompt": "p", **params}], provider=_provider(mock, model)))
        result = cli("validate", job.manifest)
        assert result.exit_code == 2, (params, result.stderr)
        assert expected in result.stderr and len(result.stderr.splitlines()) == 1, result.stderr
    provider = {"kind": "openai_images", "base_url": mock.url, "model": "gemini-3-pro-image-preview",
                "api_key_env": "DMXAPI_KEY"}
    data = manifest(mock.url, [{"id": "a", "prompt": "p", "seed": 7}], provider=provider)
    data["defaults"] = {}
    job.write(data)
    refused = cli("validate", job.manifest)
    assert refused.exit_code == 2
    assert "item a: seed: the relay's /v1/images/generations takes no seed" in refused.stderr


def test_controls_reach_the_request_body_and_the_spec(job, mock):
    safety = [{"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "threshold": "BLOCK_ONLY_HIGH"}]
    defaults = {"seed": "auto", "temperature": 0.4, "include_thoughts": False, "thinking_level": "high",
                "system_instruction": "You make product photos.", "safety_settings": safety}
    items = [{"id": "auto-seeded", "prompt": "a lamp"}, {"id": "fixed", "prompt": "a chair", "seed": 42}]
    job.write(manifest(mock.url, items, provider=_provider(mock, FLASH31), defaults=defaults))
    run = cli("run", job.manifest)
    assert run.exit_code == 0, run.stderr
    bodies = {r["prompt"]: r["body"] for r in generation_requests(mock)}
    lamp = bodies["a lamp"]
    assert lamp["generationConfig"]["seed"] == derived_seed("auto-seeded")
    assert bodies["a chair"]["generationConfig"]["seed"] == 42
    assert lamp["generationConfig"]["temperature"] == 0.4
    assert lamp["generationConfig"]["thinkingConfig"] == {"thinkingLevel": "high", "includeThoughts": False}
    assert lamp["systemInstruction"] == {"parts": [{"text": "You make product photos."}]}
    assert lamp["safetySettings"] == safety
    spec = json.loads(job.scalar("SELECT spec FROM items WHERE key = 'auto-seeded'"))
    assert spec["params"]["seed"] == derived_seed("auto-seeded") and spec["params"]["temperature"] == 0.4
    # seed auto is stable: planning again changes nothing
    again = cli("validate", job.manifest)
    assert "0 new, 0 changed, 2 unchanged done" in again.stdout, again.stdout
    # changing a control changes the spec: the item runs again
    job.write(manifest(mock.url, items, provider=_provider(mock, FLASH31), defaults={**defaults, "temperature": 0.9}))
    changed = cli("validate", job.manifest)
    assert "0 new, 2 changed" in changed.stdout, changed.stdout
    assert cli("run", job.manifest).exit_code == 0
    assert len(generation_requests(mock)) == 4
    assert generation_requests(mock)[-1]["body"]["generationConfig"]["temperature"] == 0.9


def test_controls_left_unset_keep_the_spec_of_older_plans(job, mock):
    """A manifest that sets none of the new controls plans the same spec hash as before they existed."""
    from batchfuse.plan.spec_hash import spec_hash

    job.write(manifest(mock.url, [{"id": "a", "prompt": "p", "aspect_ratio": "4:5"}]))
    assert cli("run", job.manifest).exit_code == 0
    params = {"aspect_ratio": "4:5", "image_size": "1K", "response_modalities": ["IMAGE"], "google_search": False}
    expected = spec_hash("gemini", "gemini-3-pro-image-preview", "p", params, [])
    assert job.scalar("SELECT spec_hash FROM items") == expected


def test_declared_rules_the_api_refuses_end_in_rejected_items(job, mock):
    """model_info over a catalog entry: what the API then refuses (400) rejects the item, it does
    not stop the run."""
    info = {"takes_image_size": True, "sizes": ["1K", "2K"]}
    job.write(manifest(mock.url, [{"id": "big", "prompt": "p", "image_size": "2K"}, {"id": "small", "prompt": "q"}],
                       provider=_provider(mock, "gemini-2.5-flash-image", model_info=info)))
    run = cli("run", job.manifest)
    assert run.exit_code == 1, run.stderr
    # 2.5 Flash Image takes no imageSize, which the declared rules now send for both items
    assert job.state_of() == {"big": "failed", "small": "failed"}
    outcomes = {row[0] for row in job.sql("SELECT outcome FROM attempts")}
    assert outcomes == {"rejected"}
    assert all(r["status"] == 400 for r in generation_requests(mock))
