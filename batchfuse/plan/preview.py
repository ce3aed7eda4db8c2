"""A manifest loaded and checked offline, and what running the rest of its plan would make and cost."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from batchfuse.errors import ManifestError
from batchfuse.model_catalog import ModelEntry
from batchfuse.plan.manifest import Manifest, load_manifest
from batchfuse.plan.planner import Planner

#: The built-in mock's settings when a manifest says ``base_url: mock`` (demo-friendly).
MOCK_DEFAULTS: dict[str, Any] = {"latency_ms": 150, "jitter_ms": 100, "image_scale": 0.5}


@dataclass
class Loaded:
    """A manifest with its planner: everything checked that can be checked offline."""

    path: Path
    manifest: Manifest
    planner: Planner
    items: int


def load(path: Path) -> Loaded:
    """Load and fully validate a manifest; raises InputError (one line per problem)."""
    manifest = load_manifest(path)
    planner = Planner(manifest, path)
    mock = manifest.provider.base_url == "mock"
    missing = planner.provider.credentials_problem(manifest.provider.api_key_env, planner.provider_config, mock=mock)
    if missing is not None:
        raise ManifestError(str(path), missing.message, field=f"provider.{missing.field}")
    if manifest.provider.base_url == "mock":
        mock_config(manifest, str(path))
    return Loaded(path, manifest, planner, planner.validate())


def mock_config(manifest: Manifest, file: str) -> Any:
    from batchfuse.mock.config import make_config

    try:  # pydantic checks names and types, so a wrong option fails at validate, not at run
        return make_config({**MOCK_DEFAULTS, **manifest.provider.mock})
    except ValueError as exc:
        raise ManifestError(file, str(exc), field="provider.mock") from None


def cost_per_image(planner: Planner) -> float:
    """Money per image from the manifest's pricing (0 when none is set), as the run counts it."""
    pricing = planner.manifest.pricing
    if pricing is None:
        return 0.0
    if pricing.per_image is not None:
        return pricing.per_image
    tokens = planner.provider.tokens_per_image(planner.model, planner.defaults)
    return tokens * (pricing.per_million_tokens or 0.0) / 1e6


def cost_per_token(planner: Planner) -> float:
    """Money per thinking token for ``limits.max_cost``: the token price with
    ``pricing.per_million_tokens`` (thinking is billed as output), else 0 (a price per image
    covers the whole image)."""
    pricing = planner.manifest.pricing
    if pricing is None or pricing.per_image is not None or pricing.per_million_tokens is None:
        return 0.0
    return pricing.per_million_tokens / 1e6


@dataclass(frozen=True)
class Estimate:
    requests: int
    images: int
    tokens: int
    cost: float | None
    #: Thinking tokens expected (requests × the job's average so far); None: the model thinks
    #: but no reply has said how much yet; 0: the model does not think.
    thoughts: int | None = 0
    #: The cost at the catalog's list prices (online), when every image's price is known.
    list_cost: float | None = None
    #: The same at the catalog's batch prices (Batch API), when every image's is known.
    list_cost_batch: float | None = None


def _size_of(entry: ModelEntry, params: dict[str, Any]) -> str | None:
    size = params.get("image_size") if entry.takes_image_size else None
    return size or entry.relay_size or (entry.sizes[0] if entry.sizes else None)


def estimate(loaded: Loaded, settled: dict[str, str], thoughts_per_request: float | None = None) -> Estimate:
    """What running the rest of the plan would make and cost (first attempts only).

    ``settled`` maps the keys of done or failed items to their spec hash: those are skipped
    while their spec is unchanged.  ``thoughts_per_request`` (the job's replies so far) prices
    the thinking tokens of a model that thinks."""
    provider, entry = loaded.planner.provider, loaded.planner.model
    requests = images = tokens = 0
    list_cost: float | None = 0.0
    list_cost_batch: float | None = 0.0

    def per_request(params: dict[str, Any]) -> tuple[int, int, float | None, float | None]:
        n = provider.images_per_item(params)
        size = _size_of(entry, params)
        known = size is not None and entry.checked
        price = entry.price_per_image(size) if known else None
        batch = entry.price_per_image(size, batch=True) if known else None
        return (n, n * provider.tokens_per_image(entry, params),
                None if price is None else n * price, None if batch is None else n * batch)

    # the plan in brief (validate kept it: no second pass over the catalog), priced per distinct parameters
    digest = loaded.planner.digest
    if digest is None:
        raise RuntimeError("estimate needs a validated plan (preview.load validates)")
    costs = [per_request(params) for params in loaded.planner.digest_params]
    todo = [costs[index] for key, (spec_hash, _, index) in digest.items() if settled.get(key) != spec_hash]
    for n, row_tokens, row_cost, row_batch in todo:
        requests, images, tokens = requests + 1, images + n, tokens + row_tokens
        list_cost = None if list_cost is None or row_cost is None else list_cost + row_cost
        list_cost_batch = None if list_cost_batch is None or row_batch is None else list_cost_batch + row_batch
    thinks = provider.REPORTS_THOUGHTS and (entry.thought_images or bool(entry.thinking_levels) or not entry.checked)
    thoughts = round(requests * thoughts_per_request) if thoughts_per_request is not None else (None if thinks else 0)
    pricing = loaded.manifest.pricing
    cost = None
    if pricing is not None and pricing.per_image is not None:
        cost = images * pricing.per_image
    elif pricing is not None and pricing.per_million_tokens is not None:
        cost = (tokens + (thoughts or 0)) * pricing.per_million_tokens / 1e6
    return Estimate(
        requests, images, tokens, cost, thoughts, list_cost if requests else None, list_cost_batch if requests else None
    )
