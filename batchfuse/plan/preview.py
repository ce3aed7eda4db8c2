"""A manifest loaded and checked offline, and what running the rest of its plan would make and cost."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from batchfuse.errors import ManifestError
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


def cost_per_image(loaded: Loaded) -> float:
    """Money per image from the manifest's pricing (0 when none is set)."""
    pricing = loaded.manifest.pricing
    if pricing is None:
        return 0.0
    if pricing.per_image is not None:
        return pricing.per_image
    tokens = loaded.planner.provider.tokens_per_image(loaded.manifest.provider.model, loaded.planner.defaults)
    return tokens * (pricing.per_million_tokens or 0.0) / 1e6


@dataclass(frozen=True)
class Estimate:
    requests: int
    images: int
    tokens: int
    cost: float | None


def estimate(loaded: Loaded, settled: dict[str, str]) -> Estimate:
    """What running the rest of the plan would make and cost (first attempts only).

    ``settled`` maps the keys of done or failed items to their spec hash: those are skipped
    while their spec is unchanged."""
    provider, model = loaded.planner.provider, loaded.manifest.provider.model
    requests = images = tokens = 0
    if loaded.planner.digest is not None:  # validated: the plan in brief, no second pass
        for key, (spec_hash, _, n, row_tokens) in loaded.planner.digest.items():
            if settled.get(key) != spec_hash:
                requests, images, tokens = requests + 1, images + n, tokens + row_tokens
    for row in loaded.planner.rows([]) if loaded.planner.digest is None else ():
        if settled.get(row.key) == row.spec_hash:
            continue
        n = provider.images_per_item(row.spec.params)
        requests += 1
        images += n
        tokens += n * provider.tokens_per_image(model, row.spec.params)
    pricing = loaded.manifest.pricing
    cost = None
    if pricing is not None and pricing.per_image is not None:
        cost = images * pricing.per_image
    elif pricing is not None and pricing.per_million_tokens is not None:
        cost = tokens * pricing.per_million_tokens / 1e6
    return Estimate(requests, images, tokens, cost)
