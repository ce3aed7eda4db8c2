"""The planner's request-size check measures each item's request from a remembered skeleton plus
its prompt: the figure is the provider's own ``body_size`` for every prompt, parameter set and images."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from batchfuse.plan.manifest import load_manifest
from batchfuse.plan.planner import MAX_SKELETONS, Planner
from batchfuse.plan.spec_hash import SpecHasher, canonical_json, spec_hash
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


# -- the spec hash, written once per parameter set and images, the prompt spliced in ------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(
    kind=st.sampled_from(["gemini", "openai_images", 'odd "kind" é']),
    model=st.text(max_size=30),
    prompt=st.text(),
    params=st.dictionaries(st.text(max_size=12), json_values, max_size=5),
    digests=st.lists(st.text(max_size=70), max_size=4),
)
def test_the_memoized_spec_hash_is_the_spec_hash(kind, model, prompt, params, digests):
    """The bytes hashed are the same, so no item's spec hash changes (a changed hash would send it again)."""
    hasher = SpecHasher(kind, model)
    try:
        expected = spec_hash(kind, model, prompt, params, digests)
    except UnicodeEncodeError:  # a lone surrogate: refused the same way
        with pytest.raises(UnicodeEncodeError):
            hasher(prompt, canonical_json(params), tuple(digests))
        return
    assert hasher(prompt, canonical_json(params), tuple(digests)) == expected
    assert hasher(prompt, canonical_json(params), tuple(digests)) == expected  # from the memo


def test_the_plans_spec_hashes_are_the_spec_hash(tmp_path):
    """Every row of a plan (shared parameters, own parameters, variants, seed: auto) has the hash
    :func:`spec_hash` gives its spec, and the plan in brief groups rows by equal parameters."""
    items = [{"id": f"i{n}", "prompt": p} for n, p in enumerate(PROMPTS)]
    items += [{"id": "own", "prompt": "p", "seed": 7, "aspect_ratio": "16:9"},
              {"id": "auto", "prompt": "p", "seed": "auto"},
              {"id": "three", "prompt": "p", "variants": 3}]
    planner = planned(tmp_path, "gemini", items)
    rows = list(planner.rows([]))
    assert len(rows) == len(items) + 2
    for row in rows:
        expected = spec_hash(planner.provider.kind, planner.model.name, row.spec.prompt, row.spec.params,
                             [r.cache_key for r in row.spec.images])
        assert row.spec_hash == expected == planner.digest[row.key][0]
        assert planner.digest_params[planner.digest[row.key][2]] == row.spec.params
    shared = {planner.digest[f"i{n}"][2] for n in range(len(PROMPTS))}
    assert len(shared) == 1
