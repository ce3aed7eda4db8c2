"""Reference-image checking and output-image making, both cached.

Why caches: the benchmark pushes hundreds of requests a second through one core, mostly with
the same few reference images and prompts. Decoding a reference or encoding a PNG is the
expensive part of a request, so each is done once per distinct input:

- :class:`ReferenceDecoder` keys by a digest of the *encoded* data, so a repeated reference
  costs one hash, not one base64 decode and one Pillow decode.
- :class:`ImageMaker` keys by ``(mode, size, prompt, reference digests, variant)`` and keeps the
  PNG and its base64 together in a byte-bounded LRU; concurrent misses for one key share one
  render, and large renders run in a worker thread so the event loop keeps answering.
- ``noise`` images (for benchmarks at real pixel sizes) key by size alone: one render per size,
  so a 4K reply costs the mock a cache hit, not a 17-megapixel encode.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import io
import math
import os
import textwrap
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from PIL import Image, ImageDraw, ImageFont, ImageOps

#: Longest side of the copy of a reference image kept for collages.
THUMB_PX = 256
#: Renders at or below this many pixels are cheap enough to do on the event loop.
INLINE_RENDER_PIXELS = 160 * 160
#: References whose encoded form is larger than this are decoded in a worker thread.
INLINE_DECODE_CHARS = 256 * 1024

_HEIF_BRANDS = (b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1", b"avif")


class ImageDataError(ValueError):
    """Reference image data that a real API would refuse (bad base64, not an image)."""


@dataclass(frozen=True)
class Reference:
    """One checked reference image, as far as the mock needs it."""

    #: Stable digest of the encoded input; part of the output cache key.
    digest: str
    #: Small loaded copy for the collage; ``None`` draws a labelled placeholder tile instead.
    thumb: Image.Image | None
    #: Text for a placeholder tile (a URL's file name, a format name).
    label: str


@dataclass(frozen=True)
class RenderedImage:
    """An encoded output image with its base64 form, computed once and shared."""

    png: bytes
    b64: str
    width: int
    height: int


class _LRU:
    """A tiny LRU bounded by entry count and by summed size; used only on the loop thread."""

    def __init__(self, max_entries: int, max_bytes: int) -> None:
        self._items: OrderedDict[Any, tuple[Any, int]] = OrderedDict()
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self._bytes = 0

    def get(self, key: Any) -> Any:
        hit = self._items.get(key)
        if hit is None:
            return None
        self._items.move_to_end(key)
        return hit[0]

    def put(self, key: Any, value: Any, size: int) -> None:
        old = self._items.pop(key, None)
        if old is not None:
            self._bytes -= old[1]
        self._items[key] = (value, size)
        self._bytes += size
        while self._items and (len(self._items) > self._max_entries or self._bytes > self._max_bytes):
            _, (_, dropped) = self._items.popitem(last=False)
            self._bytes -= dropped

    def __len__(self) -> int:
        return len(self._items)


def _open_reference(raw: bytes, mime: str) -> Image.Image | None:
    """Decode enough of an image to prove Pillow can read it; return a small RGB(A) copy.

    HEIC/HEIF are accepted by the real API but Pillow cannot decode them without a plugin, so
    for those an ISO-BMFF ``ftyp`` header with a HEIF brand is proof enough (placeholder tile).
    """
    try:
        with Image.open(io.BytesIO(raw)) as img:
            img.draft("RGB", (THUMB_PX, THUMB_PX))  # JPEG: decode at reduced scale, much faster
            img.load()
            thumb = img.convert("RGBA" if "A" in img.getbands() or "transparency" in img.info else "RGB")
    except Exception as exc:  # Pillow raises many types for bad data; all mean "not an image"
        if mime in ("image/heic", "image/heif") and raw[4:8] == b"ftyp" and raw[8:12] in _HEIF_BRANDS:
            return None
        raise ImageDataError(f"image data could not be decoded as {mime or 'an image'}: {exc}") from None
    thumb.thumbnail((THUMB_PX, THUMB_PX))
    thumb.load()
    return thumb


class ReferenceDecoder:
    """Checks reference images (base64 or raw bytes) and remembers the verdict per digest."""

    def __init__(self, max_entries: int = 512) -> None:
        self._cache = _LRU(max_entries, max_bytes=max_entries * THUMB_PX * THUMB_PX * 4)

    async def from_base64(self, data: str, mime: str) -> Reference:
        """Check base64 image data; raise :class:`ImageDataError` if a real API would refuse it."""
        try:
            encoded = data.encode("ascii")
        except UnicodeEncodeError:
            raise ImageDataError("image data is not valid base64 (non-ASCII characters)") from None
        digest = hashlib.blake2b(encoded, digest_size=16).hexdigest()
        return await self._decode(digest, mime, lambda: _b64decode(encoded), len(encoded))

    async def from_bytes(self, raw: bytes, mime: str, label: str) -> Reference:
        """Check raw image bytes (a file served from the mock's own ``/files/``)."""
        digest = hashlib.blake2b(raw, digest_size=16).hexdigest()
        return await self._decode(digest, mime, lambda: raw, len(raw), label)

    @staticmethod
    def placeholder(url: str) -> Reference:
        """A reference the mock must not fetch (an outside URL): accepted, drawn as a label."""
        digest = hashlib.blake2b(url.encode("utf-8", "replace"), digest_size=16).hexdigest()
        return Reference(digest, None, url.rsplit("/", 1)[-1][:40] or url[:40])

    async def _decode(self, digest: str, mime: str, raw: Any, size: int, label: str = "") -> Reference:
        cached = self._cache.get((digest, mime))
        if isinstance(cached, ImageDataError):
            raise cached
        if cached is not None:
            return cached

        def work() -> Reference:
            thumb = _open_reference(raw(), mime)
            return Reference(digest, thumb, label or mime.rsplit("/", 1)[-1])

        try:
            if size > INLINE_DECODE_CHARS:
                ref = await asyncio.get_running_loop().run_in_executor(None, work)
            else:
                ref = work()
        except ImageDataError as exc:
            self._cache.put((digest, mime), exc, 64)
            raise
        thumb_bytes = ref.thumb.width * ref.thumb.height * 4 if ref.thumb is not None else 64
        self._cache.put((digest, mime), ref, thumb_bytes)
        return ref


def _b64decode(encoded: bytes) -> bytes:
    try:
        raw = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise ImageDataError("image data is not valid base64") from None
    if not raw:
        raise ImageDataError("image data is empty")
    return raw


class ImageMaker:
    """Makes output PNGs (collage or solid colour) and caches them with their base64."""

    def __init__(self, max_entries: int = 512, max_bytes: int = 256 * 1024 * 1024) -> None:
        self._cache = _LRU(max_entries, max_bytes)
        self._inflight: dict[tuple[Any, ...], asyncio.Task[RenderedImage]] = {}

    async def render(
        self,
        mode: str,
        size: tuple[int, int],
        prompt: str,
        refs: list[Reference],
        variant: str = "",
    ) -> RenderedImage:
        """The image for these inputs, from the cache when possible."""
        if mode == "noise":
            prompt, refs, variant = "", [], ""  # one image per size, whatever was asked
        key = (mode, size, prompt, tuple(r.digest for r in refs), variant)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        if size[0] * size[1] <= INLINE_RENDER_PIXELS:
            image = make_image(mode, size, prompt, refs, variant)
            self._store(key, image)
            return image
        task = self._inflight.get(key)
        if task is None:
            # A task of its own, so a waiter whose client went away (and was cancelled) does
            # not cancel the render the other waiters for the same key are sharing.
            task = asyncio.ensure_future(self._render_in_thread(key, mode, size, prompt, refs, variant))
            self._inflight[key] = task
            task.add_done_callback(lambda done: self._settle(key, done))
        return await asyncio.shield(task)

    async def _render_in_thread(
        self,
        key: tuple[Any, ...],
        mode: str,
        size: tuple[int, int],
        prompt: str,
        refs: list[Reference],
        variant: str,
    ) -> RenderedImage:
        loop = asyncio.get_running_loop()
        image = await loop.run_in_executor(None, make_image, mode, size, prompt, refs, variant)
        self._store(key, image)
        return image

    def _settle(self, key: tuple[Any, ...], task: asyncio.Task[RenderedImage]) -> None:
        self._inflight.pop(key, None)
        if not task.cancelled():
            task.exception()  # mark retrieved even if every waiter has gone

    def _store(self, key: tuple[Any, ...], image: RenderedImage) -> None:
        self._cache.put(key, image, len(image.png) + len(image.b64))


def make_image(
    mode: str, size: tuple[int, int], prompt: str, refs: list[Reference], variant: str = ""
) -> RenderedImage:
    """Draw and encode one image. Pure and thread-safe: safe to run in a worker thread."""
    if mode == "solid":
        img = Image.new("RGB", size, _colour(prompt, variant, 0))
    elif mode == "noise":
        img = noise_image(size)
    else:
        img = _collage(size, prompt, refs, variant)
    buf = io.BytesIO()
    img.save(buf, "PNG", compress_level=1)
    png = buf.getvalue()
    return RenderedImage(png, base64.b64encode(png).decode("ascii"), size[0], size[1])


#: Random bits per colour channel of a ``noise`` image: 2 makes a PNG about as large as a real
#: generated one (a 5504×3072 image: ~21 MB, like Gemini 3 Pro Image's ~20 MB at 4K).
NOISE_BITS = 2
_NOISE_TABLE = bytes(100 + (b & ((1 << NOISE_BITS) - 1)) for b in range(256))


def noise_image(size: tuple[int, int]) -> Image.Image:
    """Grey RGB noise with :data:`NOISE_BITS` of entropy a channel: incompressible enough that
    its PNG has a real image's size, so clients pay real decode, hash and write costs."""
    width, height = size
    return Image.frombytes("RGB", size, os.urandom(width * height * 3).translate(_NOISE_TABLE))


def _colour(prompt: str, variant: str, salt: int) -> tuple[int, int, int]:
    """A stable colour per prompt, so the same prompt always looks the same."""
    digest = hashlib.sha256(f"{salt}|{variant}|{prompt}".encode()).digest()
    return digest[0], digest[1], digest[2]


def _collage(size: tuple[int, int], prompt: str, refs: list[Reference], variant: str) -> Image.Image:
    """A gradient background, the references as tiles, and the prompt written along the bottom."""
    width, height = size
    gradient = Image.linear_gradient("L").resize(size)
    img = ImageOps.colorize(gradient, _colour(prompt, variant, 1), _colour(prompt, variant, 2))
    draw = ImageDraw.Draw(img)
    short = min(width, height)
    margin = max(1, short // 32)
    font_px = max(8, short // 20)
    band = min(height // 3, 3 * font_px + 2 * margin) if prompt else 0
    _draw_tiles(img, draw, refs, (margin, margin, width - margin, height - band - margin), font_px)
    if band:
        draw.rectangle((0, height - band, width, height), fill=(20, 20, 20))
        text, font, em = caption(prompt, font_px)
        chars = max(4, int(width / (font_px * em)))
        lines = textwrap.wrap(text, chars)[:3] or [""]
        if len(textwrap.wrap(text, chars)) > 3:
            lines[-1] = lines[-1][: max(1, chars - 1)] + "…"
        draw.multiline_text((margin, height - band + margin // 2), "\n".join(lines), fill=(240, 240, 240), font=font)
    if variant:
        draw.text((margin, margin), variant, fill=(255, 255, 255), font=_font(font_px))
    return img


def _draw_tiles(
    img: Image.Image,
    draw: ImageDraw.ImageDraw,
    refs: list[Reference],
    box: tuple[int, int, int, int],
    font_px: int,
) -> None:
    if not refs:
        return
    left, top, right, bottom = box
    cols = math.ceil(math.sqrt(len(refs)))
    rows = math.ceil(len(refs) / cols)
    gap = max(1, (right - left) // 64)
    tile_w = max(1, (right - left - gap * (cols - 1)) // cols)
    tile_h = max(1, (bottom - top - gap * (rows - 1)) // rows)
    for index, ref in enumerate(refs):
        x = left + (index % cols) * (tile_w + gap)
        y = top + (index // cols) * (tile_h + gap)
        if ref.thumb is None:
            draw.rectangle((x, y, x + tile_w - 1, y + tile_h - 1), fill=(90, 90, 90), outline=(200, 200, 200))
            label, font, _ = caption(ref.label, max(8, font_px // 2))
            draw.text((x + 2, y + 2), label, fill=(255, 255, 255), font=font)
            continue
        tile = ImageOps.contain(ref.thumb, (tile_w, tile_h))
        offset = (x + (tile_w - tile.width) // 2, y + (tile_h - tile.height) // 2)
        img.paste(tile, offset, tile if tile.mode == "RGBA" else None)


_fonts = threading.local()

#: Fonts with CJK glyphs where Debian's packages put them (fonts-noto-cjk, fonts-wqy-microhei,
#: fonts-wqy-zenhei, fonts-droid-fallback, fonts-arphic-uming); the first one present is used.
CJK_FONTS: tuple[str, ...] = (
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
    "/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf",
    "/usr/share/fonts/truetype/arphic/uming.ttc",
)


def _latin(text: str) -> bool:
    """Whether Pillow's bundled (Latin) font has glyphs for all of ``text``."""
    return all(ord(c) < 0x250 or 0x2000 <= ord(c) < 0x2070 for c in text)


def caption(text: str, px: int) -> tuple[str, Any, float]:
    """What to write for ``text``, in which font, and the font's average width in em.

    Latin text in Pillow's font; other scripts (the spec's example prompts are Chinese) in a
    CJK-capable system font when there is one; without one, the text's digest, so an image
    never shows a row of empty boxes."""
    if _latin(text):
        return text, _font(px), 0.6
    path = next((p for p in CJK_FONTS if os.path.isfile(p)), None)
    if path is not None:
        return text, _font(px, path), 1.0
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    return f"prompt sha256 {digest}… ({len(text)} characters, no CJK font here)", _font(px), 0.6


def _font(px: int, path: str | None = None) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """A font (Pillow's bundled one, or the file at ``path``) at a pixel size, one instance per
    thread (FreeType is not thread-safe)."""
    cache: dict[tuple[int, str | None], Any] = _fonts.__dict__.setdefault("by_size", {})
    font = cache.get((px, path))
    if font is None:
        if path is not None:
            font = ImageFont.truetype(path, px)
        else:
            try:
                font = ImageFont.load_default(size=px)
            except TypeError:  # Pillow < 10.1 has no sized default font
                font = ImageFont.load_default()
        cache[(px, path)] = font
    return font
