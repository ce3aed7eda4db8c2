"""The model catalog: what each image model accepts, produces and costs, read from ``model_catalog.json``.

The data file names a source for every fact (``sources`` per model, keys of the top-level
``sources``); a fact no source gives is ``null`` there and ``None`` here, never a guess.

Usage::

    from batchfuse.model_catalog import lookup

    entry = lookup("gemini-3-pro-image-preview")
    entry.pixel_size("2K", "16:9")        # (2752, 1536)
    entry.tokens_per_image("4K")          # 2000
    entry.price_per_image("1K", batch=True)
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from functools import lru_cache
from importlib import resources
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

CATALOG_FILE = "model_catalog.json"

#: The facts each resolved entry must carry, each with a source.
FACTS = (
    "providers",
    "max_reference_images",
    "aspect_ratios",
    "sizes",
    "takes_response_modalities",
    "takes_image_size",
    "tools",
    "thinking_levels",
    "include_thoughts",
    "thought_images",
    "relay_size",
    "pixels_1k",
    "size_scale",
    "output_tokens_per_image",
    "price_per_image_usd",
    "max_request_bytes",
)


class CatalogError(ValueError):
    """The catalog file is malformed (a packaging bug, not a user error)."""


@dataclass(frozen=True)
class ModelEntry:
    """One model as the catalog describes it; ``None`` where no source says."""

    name: str
    #: batchfuse provider kinds that serve this name (``gemini``, ``openai_images``).
    providers: tuple[str, ...]
    max_reference_images: int
    aspect_ratios: tuple[str, ...]
    #: ``imageConfig.imageSize`` values, smallest first.
    sizes: tuple[str, ...]
    #: Whether a request may set ``generationConfig.responseModalities`` / ``imageConfig.imageSize``.
    takes_response_modalities: bool
    takes_image_size: bool
    #: Tool names (lowerCamel, as in ``tools[].googleSearch``) a request may carry.
    tools: tuple[str, ...]
    #: ``thinkingConfig.thinkingLevel`` values; ``None``: the level cannot be set.
    thinking_levels: tuple[str, ...] | None
    #: Whether ``thinkingConfig.includeThoughts`` is accepted.
    include_thoughts: bool
    #: Whether replies carry interim ``"thought": true`` images before the final one.
    thought_images: bool
    #: The one size the OpenAI-compatible relay makes under this name (``None``: not a relay name).
    relay_size: str | None
    pixels_1k: dict[str, tuple[int, int]]
    size_scale: dict[str, float]
    output_tokens_per_image: dict[str, int | None]
    #: ``{"online": {size: usd}, "batch": {size: usd}}``.
    price_per_image_usd: dict[str, dict[str, float | None]]
    #: Fact name -> source keys (space-separated) of the catalog's ``sources``.
    sources: dict[str, str]
    #: Where the entry comes from: ``catalog``, ``model_info`` (declared in the manifest) or
    #: ``unchecked`` (a model nobody described: no rule is checked, no price known).
    origin: str = "catalog"
    #: Largest request body the API takes, in bytes (Gemini inline: 20 MB); ``None``: unknown.
    max_request_bytes: int | None = None

    @property
    def checked(self) -> bool:
        """Whether the model's rules are known (catalog or ``provider.model_info``)."""
        return self.origin != "unchecked"

    def serves(self, provider_kind: str) -> bool:
        return provider_kind in self.providers

    def pixel_size(self, size: str, ratio: str) -> tuple[int, int]:
        """Width and height of one output image of this size and aspect ratio."""
        width, height = self.pixels_1k[ratio]
        scale = self.size_scale[size]
        return round(width * scale), round(height * scale)

    def tokens_per_image(self, size: str) -> int | None:
        return self.output_tokens_per_image.get(size)

    def price_per_image(self, size: str, batch: bool = False) -> float | None:
        return self.price_per_image_usd["batch" if batch else "online"].get(size)


@dataclass(frozen=True)
class Catalog:
    """Every model of the data file, by name, and the source texts its entries cite."""

    models: dict[str, ModelEntry]
    sources: dict[str, str]

    def for_provider(self, provider_kind: str) -> list[ModelEntry]:
        return [m for m in self.models.values() if m.serves(provider_kind)]


def _entry(name: str, raw: dict[str, Any], source_keys: set[str]) -> ModelEntry:
    missing = [f for f in FACTS if f not in raw]
    if missing:
        raise CatalogError(f"model {name!r}: missing {', '.join(missing)}")
    sources = raw["sources"]
    for fact in FACTS:
        cited = sources.get(fact, "").split()
        if not cited or not set(cited) <= source_keys:
            raise CatalogError(f"model {name!r}: fact {fact!r} cites no known source")
    pixels = {ratio: (int(w), int(h)) for ratio, (w, h) in raw["pixels_1k"].items()}
    if set(pixels) != set(raw["aspect_ratios"]) or set(raw["size_scale"]) != set(raw["sizes"]):
        raise CatalogError(f"model {name!r}: pixel table does not cover its ratios and sizes")
    levels = raw["thinking_levels"]
    return ModelEntry(
        name=name,
        providers=tuple(raw["providers"]),
        max_reference_images=int(raw["max_reference_images"]),
        aspect_ratios=tuple(raw["aspect_ratios"]),
        sizes=tuple(raw["sizes"]),
        takes_response_modalities=bool(raw["takes_response_modalities"]),
        takes_image_size=bool(raw["takes_image_size"]),
        tools=tuple(raw["tools"]),
        thinking_levels=None if levels is None else tuple(levels),
        include_thoughts=bool(raw["include_thoughts"]),
        thought_images=bool(raw["thought_images"]),
        relay_size=raw["relay_size"],
        pixels_1k=pixels,
        size_scale={k: float(v) for k, v in raw["size_scale"].items()},
        output_tokens_per_image=dict(raw["output_tokens_per_image"]),
        price_per_image_usd={k: dict(v) for k, v in raw["price_per_image_usd"].items()},
        sources=dict(sources),
        max_request_bytes=raw["max_request_bytes"],
    )


def parse_catalog(data: dict[str, Any]) -> Catalog:
    """A :class:`Catalog` from the file's JSON; an entry with ``base`` inherits that model's facts."""
    sources = dict(data["sources"])
    raw_models: dict[str, dict[str, Any]] = data["models"]
    models = {}
    for name, raw in raw_models.items():
        merged = raw
        if "base" in raw:
            base = raw_models[raw["base"]]
            merged = {**base, **raw, "sources": {**base["sources"], **raw["sources"]}}
        models[name] = _entry(name, merged, set(sources))
    return Catalog(models, sources)


@lru_cache(maxsize=1)
def load_catalog() -> Catalog:
    """The catalog shipped in the package (read once)."""
    text = resources.files("batchfuse").joinpath(CATALOG_FILE).read_text(encoding="utf-8")
    return parse_catalog(json.loads(text))


def lookup(name: str) -> ModelEntry | None:
    """The catalog entry of a model name, or ``None`` if the catalog does not know it."""
    return load_catalog().models.get(name)


def model_entry(name: str) -> ModelEntry:
    """The entry of a model a provider runs; a name the catalog lacks is a packaging bug."""
    entry = lookup(name)
    if entry is None:
        raise CatalogError(f"model {name!r} is not in {CATALOG_FILE}")
    return entry


def unchecked_entry(name: str, provider_kind: str) -> ModelEntry:
    """A model neither the catalog nor the manifest describes: every rule is left to the API
    (empty ratio and size lists mean "any"), no output tokens or price are known."""
    return ModelEntry(
        name=name, providers=(provider_kind,), max_reference_images=0, aspect_ratios=(), sizes=(),
        takes_response_modalities=True, takes_image_size=True, tools=("googleSearch", "urlContext"),
        thinking_levels=(), include_thoughts=True, thought_images=False, relay_size=None, pixels_1k={},
        size_scale={}, output_tokens_per_image={}, price_per_image_usd={"online": {}, "batch": {}},
        sources={}, origin="unchecked",
    )


#: Aspect ratios a declared model takes when its ``model_info`` does not list them.
COMMON_RATIOS = ("1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9")
#: An aspect ratio as the APIs write it, like ``16:9``.
RATIO = r"^[1-9][0-9]{0,2}:[1-9][0-9]{0,2}$"


class PricePerImage(BaseModel):
    """List price of one image, per size, in US dollars."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    online: dict[str, float] = Field(default_factory=dict)
    batch: dict[str, float] = Field(default_factory=dict)

    @field_validator("online", "batch", mode="before")
    @classmethod
    def _sizes_as_text(cls, v: Any) -> Any:
        return {str(k) if isinstance(k, int) else k: x for k, x in v.items()} if isinstance(v, dict) else v


class ModelInfo(BaseModel):
    """``provider.model_info``: the rules and price of a model the catalog does not list (or
    corrections to one it does: a given field replaces the catalog's).  The same fields as a
    catalog entry; a field left out takes the default below (for a listed model: the catalog's)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    max_reference_images: int | None = Field(None, ge=0, le=1000)
    aspect_ratios: list[str] | None = Field(None, min_length=1)
    sizes: list[Literal["512", "1K", "2K", "4K"]] | None = Field(None, min_length=1)
    takes_response_modalities: bool | None = None
    takes_image_size: bool | None = None
    tools: list[Literal["googleSearch", "urlContext"]] | None = None
    thinking_levels: list[Literal["minimal", "low", "medium", "high"]] | None = None
    include_thoughts: bool | None = None
    thought_images: bool | None = None
    relay_size: Literal["512", "1K", "2K", "4K"] | None = None
    output_tokens_per_image: dict[Literal["512", "1K", "2K", "4K"], int] | None = None
    price_per_image_usd: PricePerImage | None = None
    max_request_bytes: int | None = Field(None, ge=1024, le=10**10)

    @field_validator("sizes", "relay_size", "output_tokens_per_image", mode="before")
    @classmethod
    def _sizes_as_text(cls, v: Any) -> Any:
        """``512`` written unquoted is the size ``"512"``."""
        if isinstance(v, int) and not isinstance(v, bool):
            return str(v)
        if isinstance(v, list):
            return [str(x) if isinstance(x, int) and not isinstance(x, bool) else x for x in v]
        if isinstance(v, dict):
            return {str(k) if isinstance(k, int) else k: x for k, x in v.items()}
        return v

    @field_validator("aspect_ratios")
    @classmethod
    def _ratios(cls, v: list[str] | None) -> list[str] | None:
        for ratio in v or ():
            if not re.match(RATIO, ratio):
                raise ValueError(f"{ratio[:20]!r} is not a ratio like 16:9")
        return v


def resolve(name: str, provider_kind: str, info: ModelInfo | None = None) -> ModelEntry:
    """The rules of ``name`` as ``provider_kind`` serves it: the catalog's entry, with the
    manifest's ``model_info`` over it; an entry of no known rules (``unchecked``) when neither
    describes it."""
    listed = lookup(name)
    if listed is not None and not listed.serves(provider_kind):
        listed = None
    if info is None:
        return listed if listed is not None else unchecked_entry(name, provider_kind)
    given = info.model_dump(exclude_none=True)
    if "price_per_image_usd" in given:
        given["price_per_image_usd"] = {k: dict(v) for k, v in given["price_per_image_usd"].items()}
    for key in ("aspect_ratios", "sizes", "tools", "thinking_levels"):
        if key in given:
            given[key] = tuple(given[key])
    if listed is None:  # declared by model_info alone: these defaults for what it leaves out
        listed = replace(
            unchecked_entry(name, provider_kind), max_reference_images=14, aspect_ratios=COMMON_RATIOS,
            sizes=("1K",), tools=(), thinking_levels=None, include_thoughts=False,
        )
    return replace(listed, **given, origin="model_info")


__all__ = [
    "COMMON_RATIOS", "RATIO", "ModelInfo", "resolve",
    "Catalog", "CatalogError", "ModelEntry", "load_catalog", "lookup", "model_entry", "parse_catalog", "unchecked_entry",
]
