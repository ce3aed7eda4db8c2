"""The manifest's JSON Schema, generated from the same models that validate it (``batchfuse schema``).

Editors that speak the YAML language server complete and check a manifest that starts with
``# yaml-language-server: $schema=../batchfuse.schema.json``.  The schema is the pydantic
models' own, plus what they leave open as plain dicts: each provider's parameters (in
``defaults`` and on each item, chosen by ``provider.kind``), an item's fixed keys, and the
mock's options under ``provider.mock``.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from typing import Any

import click

from batchfuse.manifest import ITEM_KEYS, Manifest
from batchfuse.providers import PROVIDERS, provider_class

SCHEMA_ID = "https://batchfuse.invalid/batchfuse.schema.json"


def _json_type(annotation: Any) -> dict[str, Any]:
    """A JSON Schema type for a plain dataclass field annotation (str, float, int, bool, optional)."""
    if isinstance(annotation, str):
        annotation = eval(annotation, {"float": float, "int": int, "str": str, "bool": bool, "None": None})  # noqa: S307
    args = typing.get_args(annotation) if isinstance(annotation, types.UnionType) else (annotation,)
    names = {bool: "boolean", int: "integer", float: "number", str: "string", type(None): "null"}
    found = [names[a] for a in args if a in names]
    return {"type": found[0] if len(found) == 1 else found}


def mock_options_schema() -> dict[str, Any]:
    """``provider.mock``: the mock's config fields, with their defaults and descriptions."""
    from batchfuse.mock.config import MockConfig

    props: dict[str, Any] = {}
    for field in dataclasses.fields(MockConfig):
        props[field.name] = {**_json_type(field.type), "default": field.default}
    return {
        "type": "object",
        "description": "options of the built-in mock API (base_url: mock)",
        "properties": props,
        "additionalProperties": False,
    }


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
