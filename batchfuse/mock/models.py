"""What each mocked model accepts and produces, taken from the package's model catalog.

Sizes, ratios, token counts and request rules all come from ``batchfuse/model_catalog.json``
(see :mod:`batchfuse.model_catalog`), so the mock and the rest of batchfuse cannot disagree.
"""

from __future__ import annotations

from collections.abc import Mapping

from batchfuse.model_catalog import ModelEntry, load_catalog

#: Output tokens the mock reports as ``thoughtsTokenCount`` per interim image. No source gives
#: the real figure; one image's worth of tokens is the mock's own plausible stand-in.
THOUGHT_IMAGES_PER_REPLY = 1


def gemini_model(name: str, aliases: Mapping[str, str] | None = None) -> ModelEntry | None:
    """The catalog entry of a model served by ``generateContent``, or ``None``; ``aliases`` (the
    mock's ``model_aliases``) serves more names, each like the catalog model it names."""
    entry = load_catalog().models.get((aliases or {}).get(name, name))
    return entry if entry is not None and entry.serves("gemini") else None


def openai_model(name: str, aliases: Mapping[str, str] | None = None) -> ModelEntry | None:
    """The catalog entry of a model name the OpenAI-compatible relay serves, or ``None``."""
    entry = load_catalog().models.get((aliases or {}).get(name, name))
    return entry if entry is not None and entry.serves("openai_images") else None


def pixel_size(entry: ModelEntry, image_size: str, ratio: str, scale: float = 1.0) -> tuple[int, int]:
    """Width and height of an output image, scaled for fast tests but never below 8 px."""
    width, height = entry.pixel_size(image_size, ratio)
    return max(8, round(width * scale)), max(8, round(height * scale))


def tokens_per_image(entry: ModelEntry, image_size: str) -> int:
    """Output tokens billed per image, as the catalog gives them (0 where it does not know)."""
    return entry.tokens_per_image(image_size) or 0


def prompt_tokens(prompt: str, n_images: int) -> int:
    """A plausible prompt token count: ~4 characters a token plus 258 per reference image."""
    return max(1, len(prompt) // 4) + 258 * n_images
