"""Output bytes: a reply's image checked with Pillow, converted to the format its name asks for,
PNGs carrying the prompt, model and item key as iTXt chunks (and reading them back)."""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from batchfuse.images import open_image
from batchfuse.outputs.names import FORMATS

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_itxt(keyword: str, text: str) -> bytes:
    data = keyword.encode("latin-1") + b"\x00\x00\x00\x00\x00" + text.encode("utf-8")
    return struct.pack(">I", len(data)) + b"iTXt" + data + struct.pack(">I", zlib.crc32(b"iTXt" + data))


def add_png_text(png: bytes, text: Mapping[str, str]) -> bytes:
    """Insert iTXt chunks right after IHDR without re-encoding the pixels."""
    if not png.startswith(_PNG_SIGNATURE):
        raise ValueError("not a PNG")
    ihdr_end = 8 + 8 + struct.unpack(">I", png[8:12])[0] + 4
    chunks = b"".join(_png_itxt(k, v) for k, v in text.items())
    return png[:ihdr_end] + chunks + png[ihdr_end:]


@dataclass(frozen=True)
class PreparedImage:
    """An image from a reply, checked and converted to the format its name asks for."""

    payload: bytes
    width: int
    height: int


def prepare(data: bytes, name: str, text: Mapping[str, str]) -> PreparedImage:
    """Decode ``data`` with Pillow (raises ``ImageProblem`` when it is not a whole image) and
    produce the bytes to write under ``name``."""
    im = open_image(data, formats=("PNG", "JPEG", "WEBP"))
    target = FORMATS[PurePosixPath(name).suffix.lower()]
    if im.format == target:
        payload = add_png_text(data, text) if target == "PNG" else data
    else:
        buf = io.BytesIO()
        if target == "PNG":
            from PIL import PngImagePlugin

            info = PngImagePlugin.PngInfo()
            for k, v in text.items():
                info.add_itxt(k, v)
            im.save(buf, "PNG", pnginfo=info)
        else:
            (im.convert("RGB") if target == "JPEG" else im).save(buf, target, quality=95)
        payload = buf.getvalue()
    return PreparedImage(payload, im.width, im.height)


def read_png_text(path: Path) -> dict[str, str]:
    """The text chunks of a PNG (empty for anything else or a broken file)."""
    from PIL import Image

    try:
        with Image.open(path, formats=["PNG"]) as im:
            im.load()  # a whole, decodable image, not a torn one
            return dict(getattr(im, "text", {}) or {})
    except Exception:  # any unreadable file simply is not adoptable
        return {}
