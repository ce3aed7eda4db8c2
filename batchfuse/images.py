"""Reference images: checked once at plan time, normalized and base64-encoded once per run.

Pillow only opens the formats an image API can take (or that we convert), and its
decompression-bomb warning is an error here, so a hostile file cannot eat the machine; local
files are read only when they are regular files of at most 64 MiB.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from PIL import Image, ImageOps, UnidentifiedImageError

from batchfuse.inputfiles import MAX_IMAGE_BYTES, FileProblem, read_regular

#: Formats Pillow may open for reference images.
OPENABLE = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")
#: Formats the APIs take as they are; others are converted to PNG before sending.
SENDABLE = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}
#: Longest side sent to the API by default; larger images are scaled down.
DEFAULT_MAX_SIDE = 3072
#: The APIs refuse inline requests above about 20 MB; stay under with room for JSON.
MAX_INLINE_BYTES = 19 * 1024 * 1024

K = TypeVar("K")
V = TypeVar("V")


class ImageProblem(ValueError):
    """A reference image cannot be used; the message says why in a few words."""


@dataclass(frozen=True)
class ImageInfo:
    digest: str
    mime: str
    format: str
    width: int
    height: int
    size: int
    #: EXIF orientation (1: upright); another value means :func:`normalize` re-encodes it.
    orientation: int = 1

    def sent_as_is(self, max_side: int) -> bool:
        """Whether :func:`normalize` sends the file's own bytes (so their size is known unread)."""
        return _as_is(self.format, self.orientation, max(self.width, self.height), self.size, max_side)


def _orientation(im: Image.Image, fmt: str) -> object:
    """The image's EXIF orientation tag (1: upright, also when the format has no EXIF)."""
    return im.getexif().get(0x0112, 1) if fmt in ("JPEG", "WEBP", "PNG", "TIFF") else 1


def _as_is(fmt: str, orientation: object, side: int, size: int, max_side: int) -> bool:
    """Whether :func:`normalize` sends an image's own bytes: a format the API takes, upright, its
    longest side ``side`` within ``max_side`` and its ``size`` within the inline limit."""
    return fmt in SENDABLE and orientation == 1 and side <= max_side and size <= MAX_INLINE_BYTES


def open_image(data: bytes, formats: tuple[str, ...] = OPENABLE) -> Image.Image:
    """Open and fully decode ``data``; raises :class:`ImageProblem` for anything unusable."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data), formats=list(formats))
            im.load()
            return im
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        raise ImageProblem("image is too large to decode safely (decompression bomb limit)") from None
    except UnidentifiedImageError:
        raise ImageProblem(f"not an image of a supported type ({', '.join(formats)})") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageProblem(f"image cannot be decoded ({exc})") from None


def inspect_bytes(data: bytes) -> ImageInfo:
    im = open_image(data)
    fmt = im.format or "PNG"
    orientation = _orientation(im, fmt)
    return ImageInfo(
        digest=hashlib.sha256(data).hexdigest(),
        mime=SENDABLE.get(fmt, "image/png"),
        format=fmt,
        width=im.width,
        height=im.height,
        size=len(data),
        orientation=orientation if isinstance(orientation, int) else 1,
    )


def read_file(path: str) -> bytes:
    """A local image's bytes: a regular file of at most :data:`MAX_IMAGE_BYTES` (a FIFO or
    ``/dev/zero`` would otherwise be read forever)."""
    try:
        return read_regular(path, MAX_IMAGE_BYTES)
    except FileProblem as exc:
        reason = str(exc)
        raise ImageProblem(
            "file not found" if reason == "not found" else "is a folder, not an image" if "folder" in reason else reason
        ) from None


class ImageInspector:
    """Plan-time checks of local images, cached by (path, size, mtime) so a shared image is
    read once however many items use it; the digest is of the content, so touching a file
    without changing its bytes does not change any spec."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, int, int], ImageInfo | ImageProblem] = {}
        self.reads = 0

    def inspect(self, path: str) -> ImageInfo:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise ImageProblem("file not found") from None
        except OSError as exc:
            raise ImageProblem(f"cannot be read: {exc.strerror}") from None
        except ValueError:
            raise ImageProblem("the path contains a NUL byte") from None
        return remembered(self._cache, (path, st.st_size, st.st_mtime_ns), lambda: self._read(path))

    def _read(self, path: str) -> ImageInfo:
        self.reads += 1
        return inspect_bytes(read_file(path))


def remembered(cache: dict[K, V | ImageProblem], key: K, compute: Callable[[], V]) -> V:
    """``compute()`` once per ``key``: its value from ``cache``, or the :class:`ImageProblem` it
    raised, raised again."""
    hit = cache.get(key)
    if hit is None:
        try:
            hit = compute()
        except ImageProblem as exc:
            hit = exc
        cache[key] = hit
    if isinstance(hit, ImageProblem):
        raise hit
    return hit


def normalize(data: bytes, max_side: int = DEFAULT_MAX_SIDE) -> tuple[str, bytes]:
    """The bytes to send for an image: as they are when the API takes them, otherwise with
    EXIF orientation applied, converted to a format it takes, and scaled to ``max_side``."""
    im = open_image(data)
    fmt = im.format or ""
    if _as_is(fmt, _orientation(im, fmt), max(im.size), len(data), max_side):
        return SENDABLE[fmt], data
    im = ImageOps.exif_transpose(im)
    if max(im.size) > max_side:
        im.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    if fmt == "JPEG" and im.mode in ("RGB", "L"):
        im.save(out, "JPEG", quality=92)
        mime = "image/jpeg"
    else:
        if im.mode not in ("RGB", "RGBA", "L", "LA"):
            im = im.convert("RGBA")
        im.save(out, "PNG", optimize=False)
        mime = "image/png"
    encoded = out.getvalue()
    if len(encoded) > MAX_INLINE_BYTES:
        raise ImageProblem(
            f"image is {len(encoded) // 1_000_000} MB after scaling to {max_side} px; "
            f"lower reference_images.max_side to fit the API's inline limit"
        )
    return mime, encoded


def fit_steps(max_side: int) -> list[str]:
    """The fitting steps (``reference_images.fit``), gentlest first: re-encode at ``max_side``
    with falling quality, then at smaller sides.  Each is a name like ``2048px-q80``."""
    steps = [(max_side, 90), (max_side, 80), (max_side, 70)]
    steps += [(side, q) for side, q in ((2048, 80), (2048, 70), (1536, 75), (1024, 75), (768, 70), (512, 70))
              if side < max_side]
    return [f"{side}px-q{q}" for side, q in steps]


def encode_fitted(data: bytes, step: str) -> tuple[str, bytes]:
    """The image re-encoded at a fitting step: upright (EXIF applied), longest side at most the
    step's, JPEG at its quality (WebP when it has transparency).  Deterministic: the same bytes
    and step give the same output."""
    side_text, _, quality_text = step.partition("px-q")
    side, quality = int(side_text), int(quality_text)
    im = ImageOps.exif_transpose(open_image(data))
    if max(im.size) > side:
        im.thumbnail((side, side), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        im.convert("RGBA").save(out, "WEBP", quality=quality, method=4)
        return "image/webp", out.getvalue()
    im.convert("L" if im.mode in ("L", "1", "I", "I;16") else "RGB").save(out, "JPEG", quality=quality)
    return "image/jpeg", out.getvalue()


def encode(data: bytes, max_side: int, fit: str | None = None) -> tuple[str, bytes]:
    """The bytes sent for an image: normalized, or re-encoded at a fitting step."""
    return normalize(data, max_side) if fit is None else encode_fitted(data, fit)


def b64_len(size: int) -> int:
    """Characters of the base64 form of ``size`` bytes."""
    return 4 * ((size + 2) // 3)


@dataclass(frozen=True)
class EncodedImage:
    mime: str
    b64: str

    @property
    def data_url(self) -> str:
        return f"data:{self.mime};base64,{self.b64}"


class EncodedImageCache:
    """Normalized, base64-encoded reference images keyed by content digest, bounded in bytes.

    One per run: the scene every item shares is read and encoded once, not once a request.
    Thread-safe, since encoding runs in worker threads.
    """

    def __init__(self, max_bytes: int = 256 * 1024 * 1024, max_side: int = DEFAULT_MAX_SIDE) -> None:
        self.max_bytes = max_bytes
        self.max_side = max_side
        self._entries: OrderedDict[str, EncodedImage] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()
        self.reads = 0
        self.encodes = 0

    def get(self, digest: str) -> EncodedImage | None:
        with self._lock:
            hit = self._entries.get(digest)
            if hit is not None:
                self._entries.move_to_end(digest)
            return hit

    def put(self, digest: str, data: bytes, *, downloaded: bool = False, fit: str | None = None) -> EncodedImage:
        """Normalize (or re-encode at the fitting step ``fit``) and base64-encode ``data``, whose
        digest is ``digest``, and keep it under ``digest`` (``digest@fit`` when fitted)."""
        if downloaded:
            with self._lock:
                self.reads += 1
        mime, payload = encode(data, self.max_side, fit)
        entry = EncodedImage(mime, base64.b64encode(payload).decode("ascii"))
        digest = digest if fit is None else f"{digest}@{fit}"
        with self._lock:
            self.encodes += 1
            if digest not in self._entries:
                self._entries[digest] = entry
                self._size += len(entry.b64)
                while self._size > self.max_bytes and len(self._entries) > 1:
                    _, old = self._entries.popitem(last=False)
                    self._size -= len(old.b64)
        return entry

    def local(self, path: str, digest: str, fit: str | None = None) -> EncodedImage:
        """The encoded form of a local file, reading it only on a cache miss."""
        hit = self.get(digest if fit is None else f"{digest}@{fit}")
        if hit is not None:
            return hit
        data = read_file(path)
        with self._lock:
            self.reads += 1
        actual = hashlib.sha256(data).hexdigest()
        if actual != digest:
            raise ImageProblem(f"{path} changed since the job was planned; run again to re-plan it")
        return self.put(digest, data, fit=fit)
