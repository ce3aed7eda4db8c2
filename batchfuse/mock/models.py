"""What each mocked model accepts and produces: aspect ratios, pixel sizes, tokens, limits.

The numbers are the vendor tables from ``specs/gemini-generatecontent-multi-image.txt``, so a
client tested against the mock sees the sizes and token counts the real service reports.
"""

from __future__ import annotations

from dataclasses import dataclass

ASPECT_RATIOS: tuple[str, ...] = ("1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9")
IMAGE_SIZES: tuple[str, ...] = ("1K", "2K", "4K")

#: Gemini 2.5 Flash Image: 1K only. The spec's first table stops at 16:9; its second lists
#: 21:9 as 1536x672, so 21:9 is accepted with that size.
FLASH_PIXELS: dict[str, tuple[int, int]] = {
    "1:1": (1024, 1024),
    "2:3": (832, 1248),
    "3:2": (1248, 832),
    "3:4": (864, 1184),
    "4:3": (1184, 864),
    "4:5": (896, 1152),
    "5:4": (1152, 896),
    "9:16": (768, 1344),
    "16:9": (1344, 768),
    "21:9": (1536, 672),
}

#: Gemini 3 Pro Image at 1K; 2K and 4K are exactly 2× and 4× these in the spec's table.
PRO_PIXELS_1K: dict[str, tuple[int, int]] = {
    "1:1": (1024, 1024),
    "2:3": (848, 1264),
    "3:2": (1264, 848),
    "3:4": (896, 1200),
    "4:3": (1200, 896),
    "4:5": (928, 1152),
    "5:4": (1152, 928),
    "9:16": (768, 1376),
    "16:9": (1376, 768),
    "21:9": (1584, 672),
}
_SIZE_FACTOR = {"1K": 1, "2K": 2, "4K": 4}

#: Most reference images one request may carry (Gemini 3 Pro's documented limit).
MAX_REFERENCE_IMAGES = 14


@dataclass(frozen=True)
class ModelSpec:
    """One mocked model: which family's table it uses and what it lets a request set."""

    name: str
    #: ``"flash"`` or ``"pro"``: picks the pixel table and the tokens per image.
    family: str
    #: Image sizes this model can produce; flash has only 1K.
    sizes: tuple[str, ...]
    #: Flash behind the relay rejects ``responseModalities``, ``imageSize`` and ``tools``.
    accepts_generation_options: bool
    #: Gemini 3 models may send "thought" images before the final one.
    thinks: bool


GEMINI_MODELS: dict[str, ModelSpec] = {
    "gemini-3-pro-image-preview": ModelSpec("gemini-3-pro-image-preview", "pro", IMAGE_SIZES, True, True),
    "gemini-2.5-flash-image": ModelSpec("gemini-2.5-flash-image", "flash", ("1K",), False, False),
}

#: The OpenAI-compatible relay names its resolutions as separate models.
OPENAI_MODELS: dict[str, str] = {
    "gemini-3-pro-image-preview": "1K",
    "gemini-3-pro-image-preview-2k": "2K",
    "gemini-3-pro-image-preview-4k": "4K",
}


def pixel_size(family: str, image_size: str, ratio: str, scale: float = 1.0) -> tuple[int, int]:
    """Width and height of an output image, scaled for fast tests but never below 8 px."""
    if family == "flash":
        width, height = FLASH_PIXELS[ratio]
    else:
        base_w, base_h = PRO_PIXELS_1K[ratio]
        factor = _SIZE_FACTOR[image_size]
        width, height = base_w * factor, base_h * factor
    return max(8, round(width * scale)), max(8, round(height * scale))


def tokens_per_image(family: str, image_size: str) -> int:
    """Output tokens billed per image: 1290 (Flash), 1210 (3 Pro 1K/2K), 2000 (3 Pro 4K)."""
    if family == "flash":
        return 1290
    return 2000 if image_size == "4K" else 1210


def prompt_tokens(prompt: str, n_images: int) -> int:
    """A plausible prompt token count: ~4 characters a token plus 258 per reference image."""
    return max(1, len(prompt) // 4) + 258 * n_images
