"""The manifest's JSON Schema, generated from the same models that validate it (``batchfuse schema``).

Editors that speak the YAML language server complete and check a manifest that starts with
``# yaml-language-server: $schema=../batchfuse.schema.json``.  The schema is the pydantic
models' own, plus what they leave open as plain dicts: each provider's parameters (in
``defaults`` and on each item, chosen by ``provider.kind``), an item's fixed keys, and the
mock's options under ``provider.mock``.
"""

from __future__ import annotations

import json
from typing import Any

import click
from pydantic import TypeAdapter

from batchfuse.plan.manifest import ITEM_KEYS, Manifest
from batchfuse.providers import PROVIDERS, provider_class

SCHEMA_ID = "https://batchfuse.invalid/batchfuse.schema.json"


def mock_options_schema() -> dict[str, Any]:
    """``provider.mock``: the mock's config (a pydantic dataclass), with its defaults and bounds."""
    from batchfuse.mock.config import MockConfig

    schema = TypeAdapter(MockConfig).json_schema()
    schema.pop("title", None)
    schema["description"] = "options of the built-in mock API (base_url: mock)"
    return schema


def _params_schema(kind: str) -> dict[str, Any]:
    params = provider_class(kind).Params.model_json_schema()
    params.pop("title", None)
    return params


def _item_schema(params: dict[str, Any]) -> dict[str, Any]:
    fixed = {
        "id": {"type": ["string", "integer"], "description": "the item's stable key"},
        "prompt": {"type": "string", "description": "a template over the item's fields"},
        "images": {"type": "array", "items": {"type": "string"}, "description": "paths or http(s) URLs"},
    }
    assert set(fixed) == set(ITEM_KEYS)
    return {
        "type": "object",
        "properties": {**fixed, **params.get("properties", {})},
        "required": ["id"],
        # any other key is the item's own field, usable in templates
        "additionalProperties": {"type": ["string", "number", "boolean"]},
    }


def manifest_schema() -> dict[str, Any]:
    """The whole schema: the Manifest model's, with ``provider.kind`` choosing the parameters."""
    schema = Manifest.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = SCHEMA_ID
    schema["title"] = "batchfuse manifest"
    defs = schema.setdefault("$defs", {})
    provider = defs["ProviderConfig"]
    provider["properties"]["kind"] = {"type": "string", "enum": sorted(PROVIDERS)}
    provider["properties"]["mock"] = mock_options_schema()
    provider.pop("description", None)
    own = {}
    for kind in sorted(PROVIDERS):
        config = provider_class(kind).Config.model_json_schema()
        defs.update(config.pop("$defs", {}))
        own.update(config.get("properties", {}))
    provider["properties"].update(own)  # each provider's own keys (validated by its Config)
    provider["additionalProperties"] = False
    branches = []
    for kind in sorted(PROVIDERS):
        params = _params_schema(kind)
        defs.update(params.pop("$defs", {}))
        branches.append({
            "if": {"properties": {"provider": {"properties": {"kind": {"const": kind}}}}},
            "then": {"properties": {
                "defaults": {**params, "description": f"{kind} parameters every item gets unless it sets its own"},
                "items": {"type": "array", "minItems": 1, "items": _item_schema(params)},
            }},
        })
    schema["allOf"] = branches
    return schema


@click.command("schema")
def schema() -> None:
    """Print the manifest's JSON Schema (batchfuse schema > batchfuse.schema.json)."""
    click.echo(json.dumps(manifest_schema(), indent=2, ensure_ascii=False))
