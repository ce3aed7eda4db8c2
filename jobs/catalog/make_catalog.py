"""Regenerates the example catalog: 300 products, small product images, one scene.

    python jobs/catalog/make_catalog.py

Deterministic, so rerunning it changes nothing unless this script changes.
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

from PIL import Image, ImageDraw

HERE = Path(__file__).resolve().parent
KINDS = ["lamp", "vase", "mug", "chair", "clock", "kettle", "bowl", "stool", "candle", "planter"]
COLOURS = ["sage", "terracotta", "ivory", "charcoal", "ochre", "teal"]
SHAPES = {"lamp": "triangle", "vase": "ellipse", "mug": "rectangle", "chair": "rectangle", "clock": "ellipse",
          "kettle": "ellipse", "bowl": "ellipse", "stool": "rectangle", "candle": "rectangle", "planter": "triangle"}
RGB = {"sage": (150, 170, 140), "terracotta": (200, 110, 80), "ivory": (240, 235, 220),
       "charcoal": (60, 60, 65), "ochre": (205, 150, 60), "teal": (40, 130, 140)}


def product_image(kind: str, colour: str) -> Image.Image:
    im = Image.new("RGB", (48, 48), (250, 250, 250))
    d = ImageDraw.Draw(im)
    shape, fill = SHAPES[kind], RGB[colour]
    if shape == "ellipse":
        d.ellipse([8, 8, 40, 40], fill=fill)
    elif shape == "triangle":
        d.polygon([(24, 6), (42, 42), (6, 42)], fill=fill)
    else:
        d.rectangle([10, 10, 38, 40], fill=fill)
    return im


def main() -> None:
    rng = random.Random(2026)
    products = HERE / "products"
    products.mkdir(exist_ok=True)
    for kind in KINDS:
        for colour in COLOURS:
            product_image(kind, colour).save(products / f"{kind}-{colour}.png", optimize=True)
    scene = Image.new("RGB", (96, 64), (235, 230, 225))
    ImageDraw.Draw(scene).rectangle([0, 40, 96, 64], fill=(210, 210, 215))
    scene.save(HERE / "marble.png", optimize=True)
    with open(HERE / "catalog.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["sku", "title", "image", "price"])
        for i in range(300):
            kind, colour = rng.choice(KINDS), rng.choice(COLOURS)
            writer.writerow([f"SP26-{i:04d}", f"{colour} {kind}", f"{kind}-{colour}", f"{rng.randint(9, 199)}.00"])


if __name__ == "__main__":
    main()
