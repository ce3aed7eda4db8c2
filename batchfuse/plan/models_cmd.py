"""``batchfuse models``: the model catalog as a table, or as JSON (``--json``)."""

from __future__ import annotations

import json
from typing import Any

import click

from batchfuse.model_catalog import ModelEntry, load_catalog


def model_row(entry: ModelEntry) -> dict[str, Any]:
    """One model as ``models --json`` prints it."""
    return {
        "name": entry.name,
        "providers": list(entry.providers),
        "sizes": list(entry.sizes),
        "aspect_ratios": list(entry.aspect_ratios),
        "max_reference_images": entry.max_reference_images,
        "relay_size": entry.relay_size,
        "thinking_levels": None if entry.thinking_levels is None else list(entry.thinking_levels),
        "include_thoughts": entry.include_thoughts,
        "tools": list(entry.tools),
        "max_request_bytes": entry.max_request_bytes,
        "output_tokens_per_image": dict(entry.output_tokens_per_image),
        "price_per_image_usd": {
            "online": dict(entry.price_per_image_usd.get("online", {})),
            "batch": dict(entry.price_per_image_usd.get("batch", {})),
        },
    }


def _price(value: float | None) -> str:
    return "unknown" if value is None else f"${value:g}"


def model_lines(entry: ModelEntry) -> list[str]:
    sizes = [entry.relay_size] if entry.relay_size and "gemini" not in entry.providers else list(entry.sizes)
    prices = ", ".join(
        f"{size} {_price(entry.price_per_image(size))} (batch {_price(entry.price_per_image(size, batch=True))})"
        for size in sizes
    )
    thinking = f"; thinking levels {' '.join(entry.thinking_levels)}" if entry.thinking_levels else ""
    limit = f"; request limit {entry.max_request_bytes:,} bytes" if entry.max_request_bytes else ""
    return [
        f"{entry.name}  [{', '.join(entry.providers)}]",
        f"  sizes {' '.join(sizes)}; up to {entry.max_reference_images} reference images{thinking}{limit}",
        f"  ratios {' '.join(entry.aspect_ratios)}",
        f"  price per image: {prices}",
    ]


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def models(as_json: bool) -> None:
    """The model catalog: each model's provider kinds, sizes, ratios, reference limit and price.

    Any other model name may be used too: its rules and price are then unchecked unless the
    manifest declares them under provider.model_info."""
    catalog = load_catalog()
    if as_json:
        click.echo(json.dumps([model_row(m) for m in catalog.models.values()], indent=2))
        return
    for entry in catalog.models.values():
        for line in model_lines(entry):
            click.echo(line)
    click.echo("prices are list prices in USD per image (online; batch in brackets), as the catalog's sources "
               "give them; `batchfuse models --json` has every fact")
