"""Staging an output: its bytes go to a local temp file, checked on the way, and only then are
committed: renamed into the output folder (:class:`~batchfuse.outputs.files.LocalTarget`), or
uploaded from there to a bucket (:meth:`~batchfuse.outputs.objecttarget.ObjectOutputs.upload`).

:func:`stage_png` is the one pass a large PNG from a reply takes: its base64 (a
:class:`~batchfuse.jsonscan.RawString` left in the reply's body, or bytes) is decoded in
pieces, and each piece is, in turn, checked by :class:`~batchfuse.pngcheck.PngChecker`
(chunk CRCs, the zlib stream inflated and counted against the ``IHDR`` dimensions), hashed
(sha256) and written to the temp file, with the iTXt metadata chunks inserted right after
``IHDR``.  The file is fsynced before it is handed on.  Nothing the size of the image is held
in memory; a truncated or corrupt image raises :class:`~batchfuse.images.ImageProblem` and
leaves no file behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from batchfuse import faultpoints
from batchfuse.b64stream import Base64Problem, decode_into
from batchfuse.images import ImageProblem
from batchfuse.jsonscan import RawString
from batchfuse.pngcheck import SIGNATURE, PngChecker, PngInfo, PngProblem

#: Where text chunks go in a PNG: after the signature and the 25-byte IHDR chunk.
IHDR_END = 8 + 8 + 13 + 4
#: What the base64 of a PNG starts with.
PNG_BASE64_START = b"iVBORw0K"


@dataclass(frozen=True)
class StagedFile:
    """An output's bytes in a local temp file, complete, checked and fsynced."""

    path: Path
    sha256: str
    size: int

    def discard(self) -> None:
        """Remove the temp file (the output will not be committed)."""
        with contextlib.suppress(OSError):
            self.path.unlink(missing_ok=True)


def png_itxt(keyword: str, text: str) -> bytes:
    """One iTXt chunk (uncompressed, no language tag)."""
    data = keyword.encode("latin-1") + b"\x00\x00\x00\x00\x00" + text.encode("utf-8")
    return struct.pack(">I", len(data)) + b"iTXt" + data + struct.pack(">I", zlib.crc32(b"iTXt" + data))


def is_png_source(data: bytes | RawString) -> bool:
    """Whether a reply's image (bytes, or base64 in the body) starts like a PNG."""
    if isinstance(data, RawString):
        return bytes(data.view()[: len(PNG_BASE64_START)]) == PNG_BASE64_START
    return data[:8] == SIGNATURE


def decoded(data: bytes | RawString) -> bytes:
    """A reply's image as bytes (base64 left in the body is decoded here, whole)."""
    if not isinstance(data, RawString):
        return data
    buf = io.BytesIO()
    try:
        decode_into(data.view(), [buf.write], data.release)
    except Base64Problem as exc:
        raise ImageProblem(f"not valid base64 ({exc})") from None
    return buf.getvalue()


class _Writer:
    """The sink after the checker: holds back the first bytes until IHDR is whole, then writes
    the signature and IHDR, the text chunks, and everything after, hashing what it writes."""

    def __init__(self, file: io.BufferedWriter, chunks: bytes) -> None:
        self.file, self.chunks = file, chunks
        self.digest = hashlib.sha256()
        self.size = 0
        self._head = b""
        self._started = False

    def _write(self, piece: bytes) -> None:
        self.file.write(piece)
        self.digest.update(piece)
        self.size += len(piece)

    def __call__(self, piece: bytes) -> None:
        if self._started:
            self._write(piece)
            return
        self._head += piece
        if len(self._head) >= IHDR_END:
            head, self._head, self._started = self._head, b"", True
            self._write(head[:IHDR_END] + self.chunks + head[IHDR_END:])


def stage_png(data: bytes | RawString, text: Mapping[str, str], path: Path) -> tuple[StagedFile, PngInfo]:
    """Decode, check and write a PNG with ``text`` as iTXt chunks to ``path`` (fsynced); raises
    :class:`ImageProblem` (no file left) when it is not one whole PNG, ``OSError`` when the file
    cannot be written (no file left either)."""
    checker = PngChecker(inflate=True)
    try:
        with open(path, "wb") as f:
            writer = _Writer(f, b"".join(png_itxt(k, v) for k, v in text.items()))
            sinks = [checker.feed, writer]
            if isinstance(data, RawString):
                decode_into(data.view(), sinks, data.release)
            else:
                for start in range(0, len(data), 1 << 20):
                    piece = data[start : start + (1 << 20)]
                    for sink in sinks:
                        sink(piece)
            info = checker.finish()
            if not writer._started:
                raise PngProblem("too short for a PNG")
            f.flush()
            faultpoints.hit("output.write")
            faultpoints.hit("output.fsync")
            os.fsync(f.fileno())
    except (PngProblem, Base64Problem) as exc:
        _remove(path)
        raise ImageProblem(str(exc)) from None
    except BaseException:
        _remove(path)
        raise
    return StagedFile(path, writer.digest.hexdigest(), writer.size), info


def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink(missing_ok=True)
