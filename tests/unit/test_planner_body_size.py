"""The planner's request-size check measures each item's request from a remembered skeleton plus
its prompt: the figure is the provider's own ``body_size`` for every prompt, parameter set and images."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from batchfuse.plan.manifest import load_manifest
from batchfuse.plan.planner import MAX_SKELETONS, Planner
from tests.conftest import SAMPLE_IMAGES

PROMPTS = ["plain", 'quotes " and \\ backslashes', "tabs\tand\nlines", "é中😀 \u2028 \x00 </script>", "x" * 5000, " padded "]


def planned(tmp_path: Path, kind: str, items: list[dict]) -> Planner:
    provider = {"kind": kind, "model": "gemini-3-pro-image-preview" if kind == "gemini" else "gpt-image-1",
                "base_url": "http://127.0.0.1:9", "api_key_env": "K"}
    data = {"job": "sizes", "provider": provider, "output": {"dir": "out", "filename": "{id}.png"},
            "images": [str(SAMPLE_IMAGES / "logo.png")], "items": items}
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    planner = Planner(load_manifest(path), path)
    planner.validate()
    return planner


@pytest.mark.parametrize("kind", ["gemini", "openai_images"])
def test_every_items_body_size_is_the_providers(tmp_path, kind):
    items = [{"id": f"i{n}", "prompt": p} for n, p in enumerate(PROMPTS)]
    items += [{"id": f"scene{n}", "prompt": p, "images": [str(SAMPLE_IMAGES / "scene.png")] * 2} for n, p in enumerate(PROMPTS)]
    if kind == "gemini":
        items += [{"id": "seeded", "prompt": "with a seed", "seed": 12345, "aspect_ratio": "16:9"}]
    planner = planned(tmp_path, kind, items)
    rows = list(planner.rows([]))
    assert len(rows) == len(items)
    for row in rows:
        infos = [planner.inspector.inspect(r.src) for r in row.spec.images]
        assert planner._size(row.spec, infos) == planner.sizer.size(row.spec, infos, None)
        assert planner._size(row.spec, infos) == planner.provider.body_size(
            planner.model, row.spec, [planner.sizer.image_b64(r, i, None) for r, i in zip(row.spec.images, infos, strict=True)])
    assert any(base is not None for base in planner._bodies.values())  # the shortcut was taken


def test_per_item_parameters_stop_the_memo(tmp_path):
    items = [{"id": f"i{n}", "prompt": "p", "seed": n} for n in range(MAX_SKELETONS + 5)]
    planner = planned(tmp_path, "gemini", items)
    assert len(planner._bodies) == MAX_SKELETONS
    for row in list(planner.rows([]))[-3:]:
        infos = [planner.inspector.inspect(r.src) for r in row.spec.images]
        assert planner._size(row.spec, infos) == planner.sizer.size(row.spec, infos, None)
