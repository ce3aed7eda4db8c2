"""docs/manifest.md names every manifest key, and the published JSON Schema is the models' own:
docs, schema and code cannot drift apart."""

from __future__ import annotations

import dataclasses
import json
import re
import typing

import jsonschema
import pytest
import yaml
from pydantic import BaseModel

from batchfuse.mock.config import MockConfig
from batchfuse.plan.manifest import ITEM_KEYS, Manifest
from batchfuse.plan.schema import manifest_schema
from batchfuse.providers import PROVIDERS, provider_class
from tests.conftest import ROOT, cli

REFERENCE = ROOT / "docs" / "manifest.md"
SCHEMA_FILE = ROOT / "batchfuse.schema.json"
EXAMPLES = sorted([*ROOT.glob("jobs/*.yaml"), *ROOT.glob("jobs/catalog/*.yaml")])


def nested_models(model: type[BaseModel]) -> list[type[BaseModel]]:
    """``model`` and every model its fields hold, however deeply (through Optional, lists ...)."""
    found: list[type[BaseModel]] = [model]
    for field in model.model_fields.values():
        stack = [field.annotation]
        while stack:
            tp = stack.pop()
            if isinstance(tp, type) and issubclass(tp, BaseModel):
                if tp not in found:
                    found.extend(m for m in nested_models(tp) if m not in found)
            else:
                stack.extend(typing.get_args(tp))
    return found


def documented_keys() -> list[tuple[str, str]]:
    """(where, key) for every key a manifest may have."""
    keys = []
    for model in nested_models(Manifest):
        keys += [(model.__name__, f.alias or name) for name, f in model.model_fields.items()]
    for kind in PROVIDERS:
        keys += [(f"{kind} params", name) for name in provider_class(kind).Params.model_fields]
    keys += [("provider.mock", f.name) for f in dataclasses.fields(MockConfig)]
    keys += [("item", key) for key in ITEM_KEYS]
    return keys


def test_the_walk_finds_the_nested_models():
    names = {m.__name__ for m in nested_models(Manifest)}
    assert {"ProviderConfig", "Limits", "OutputConfig", "NetworkConfig", "ImagesConfig", "ItemsFrom", "Pricing"} <= names


@pytest.mark.parametrize(("where", "key"), documented_keys())
def test_every_manifest_key_is_in_the_reference(where, key):
    text = REFERENCE.read_text(encoding="utf-8")
    assert re.search(rf"^\| `{re.escape(key)}` \|", text, re.M), f"{where}.{key} is not a row of {REFERENCE.name}"


def test_readme_links_the_reference():
    assert "docs/manifest.md" in (ROOT / "README.md").read_text(encoding="utf-8")


def test_the_published_schema_is_the_generated_one():
    result = cli("schema")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == manifest_schema()
    assert json.loads(SCHEMA_FILE.read_text(encoding="utf-8")) == manifest_schema(), (
        "batchfuse.schema.json is stale: batchfuse schema > batchfuse.schema.json"
    )


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: str(p.relative_to(ROOT)))
def test_each_example_points_at_the_schema_and_passes_it(example):
    first = example.read_text(encoding="utf-8").splitlines()[0]
    match = re.fullmatch(r"# yaml-language-server: \$schema=(\S+)", first)
    assert match, f"{example.name} does not start with the yaml-language-server line"
    assert (example.parent / match.group(1)).resolve() == SCHEMA_FILE
    jsonschema.validate(yaml.safe_load(example.read_text(encoding="utf-8")), manifest_schema())


BASE = {"job": "j", "provider": {"kind": "gemini", "base_url": "mock", "model": "m"}, "items": [{"id": "a", "prompt": "p"}]}


@pytest.mark.parametrize(("change", "where"), [
    ({"limits": {"concurency": 2}}, "concurency"),
    ({"defaults": {"size": "1:1"}}, "size"),  # an openai_images parameter on gemini
    ({"items": [{"id": "a", "prompt": "p", "aspect_ratio": "7x5"}]}, "7x5"),  # the model's ratios: at validate
    ({"provider": {**BASE["provider"], "mock": {"latency": 5}}}, "latency"),
    ({"provider": {**BASE["provider"], "kind": "dall-e"}}, "dall-e"),
])
def test_the_schema_refuses_what_the_models_refuse(change, where):
    schema = manifest_schema()
    jsonschema.validate(BASE, schema)
    with pytest.raises(jsonschema.ValidationError, match=re.escape(where)):
        jsonschema.validate({**BASE, **change}, schema)


def test_the_schema_knows_each_providers_parameters():
    schema = manifest_schema()
    openai = {**BASE, "provider": {**BASE["provider"], "kind": "openai_images"}, "defaults": {"size": "16:9", "n": 2}}
    jsonschema.validate(openai, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**openai, "defaults": {"n": 11}}, schema)
