"""Output bytes: a reply's image checked, converted to the format its name asks for, PNGs
carrying the prompt, model and item key as iTXt chunks (and reading them back).

A PNG kept as PNG is checked without decoding its pixels (:mod:`batchfuse.pngcheck`: chunk
CRCs, the zlib stream inflated and counted against the IHDR dimensions); a large one is staged
straight into a temp file (:func:`batchfuse.outputs.stage.stage_png`).  Anything else (a
conversion, JPEG, WebP) is decoded by Pillow."""

from __future__ import annotations

import hashlib
import io
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from batchfuse.images import ImageProblem, open_image
from batchfuse.jsonscan import RawString
from batchfuse.outputs.names import FORMATS
from batchfuse.outputs.stage import StagedFile, decoded, is_png_source, png_itxt, stage_png
from batchfuse.pngcheck import SIGNATURE, PngProblem, check_png

#: Images at least this large (their base64, or bytes) are staged in a temp file as they are
#: decoded, rather than prepared in memory.
STAGE_BYTES = 256 * 1024


def add_png_text(png: bytes, text: Mapping[str, str]) -> bytes:
    """Insert iTXt chunks right after IHDR without re-encoding the pixels."""
    if not png.startswith(SIGNATURE):
        raise ValueError("not a PNG")
    ihdr_end = 8 + 8 + struct.unpack(">I", png[8:12])[0] + 4
    chunks = b"".join(png_itxt(k, v) for k, v in text.items())
    return png[:ihdr_end] + chunks + png[ihdr_end:]


@dataclass(frozen=True)
class PreparedImage:
    """An image from a reply, checked and converted to the format its name asks for: its bytes
    in memory (``payload``), or already ``staged`` in a temp file (``payload`` empty)."""

    payload: bytes
    width: int
    height: int
    staged: StagedFile | None = None

    def discard(self) -> None:
        """Give up on this image: its staged temp file, if any, goes."""
        if self.staged is not None:
            self.staged.discard()

    def digest(self) -> tuple[str, int]:
        """The sha256 and size of the bytes to write (a staged file's were taken as it was written)."""
        if self.staged is not None:
            return self.staged.sha256, self.staged.size
        return hashlib.sha256(self.payload).hexdigest(), len(self.payload)


def prepare(
    data: bytes | RawString, name: str, text: Mapping[str, str], temp_path: Callable[[], Path] | None = None
) -> PreparedImage:
    """Check ``data`` (raises ``ImageProblem`` when it is not a whole image) and produce the
    bytes to write under ``name``.  With ``temp_path`` (a new temp file's path per call), a
    large PNG is staged there as it is decoded; when the temp file cannot be written it is
    prepared in memory instead (the write that follows reports the folder's trouble)."""
    target = FORMATS[PurePosixPath(name).suffix.lower()]
    if target == "PNG" and is_png_source(data):
        if temp_path is not None and len(data) >= STAGE_BYTES:
            try:
                staged, info = stage_png(data, text, temp_path())
            except OSError:
                pass  # prepared in memory below; writing it fails alike, and the result is spooled
            else:
                return PreparedImage(b"", info.width, info.height, staged)
        png = decoded(data)
        try:
            info = check_png(png)
        except PngProblem as exc:
            raise ImageProblem(str(exc)) from None
        return PreparedImage(add_png_text(png, text), info.width, info.height)
    data = decoded(data)
    im = open_image(data, formats=("PNG", "JPEG", "WEBP"))
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


@dataclass(frozen=True)
class PngFile:
    """A whole PNG file as read back: its bytes, text chunks and dimensions."""

    data: bytes
    text: dict[str, str]
    width: int
    height: int


def read_png(path: Path) -> PngFile | None:
    """The PNG at ``path``, read once (None for anything else, a broken file or an unreadable one)."""
    from PIL import Image

    try:
        data = path.read_bytes()
        with Image.open(io.BytesIO(data), formats=["PNG"]) as im:
            im.load()  # a whole, decodable image, not a torn one
            return PngFile(data, dict(getattr(im, "text", {}) or {}), im.width, im.height)
    except Exception:  # any unreadable file simply is not adoptable
        return None


def read_png_text(path: Path) -> dict[str, str]:
    """The text chunks of a PNG (empty for anything else or a broken file)."""
    found = read_png(path)
    return found.text if found is not None else {}
