"""Decode base64 in pieces straight into a file (or any sinks) while hashing it.

A 4K image is ~27 MB of base64; decoding it whole makes a 20 MB ``bytes`` next to the text, and
each later step (check, hash, write) walks it again. :func:`decode_into` walks the text once in
pieces of :data:`PIECE_CHARS`, so what is held at once is one piece, and hands each decoded
piece to every sink in turn (a file's ``write``, ``hashlib``'s ``update``,
:meth:`batchfuse.pngcheck.PngChecker.feed`).

``pybase64`` (SIMD) decodes when it is installed, else :mod:`binascii`. It is as strict as ``base64.b64decode(..., validate=True)`` after removing whitespace: only the
standard alphabet, ``=`` padding only at the very end, and a length that is a whole number of
4-character groups; anything else raises :class:`Base64Problem` (a cut-off reply lands here).
"""

from __future__ import annotations

import binascii
import sys
from collections.abc import Callable, Iterable

#: Base64 characters decoded per step (a multiple of 4): 1 MiB of text, 768 KiB of bytes.
PIECE_CHARS = 1024 * 1024
_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_WHITESPACE = b" \t\r\n\f\v"

Sink = Callable[[bytes], object]


class Base64Problem(ValueError):
    """The text is not valid base64 (or is cut short)."""


def decode_into(
    text: bytes | bytearray | memoryview | str,
    sinks: Iterable[Sink],
    done: Callable[[int, int], object] | None = None,
) -> int:
    """Decode base64 ``text`` piece by piece, giving each decoded piece to every sink in order;
    returns the number of bytes decoded. Whitespace anywhere is skipped. ``done(start, end)``,
    when given, hears each range of ``text`` that has been read (to let its memory go)."""
    if isinstance(text, str):
        try:
            text = text.encode("ascii")
        except UnicodeEncodeError:
            raise Base64Problem("base64 text has non-ASCII characters") from None
    view = memoryview(text).cast("B")
    sinks = list(sinks)
    carry = b""  # characters left over from the last piece (fewer than 4), only after whitespace
    total = 0
    end = len(view)
    for start in range(0, end, PIECE_CHARS):
        chunk = carry + bytes(view[start : start + PIECE_CHARS])
        last = start + PIECE_CHARS >= end
        data = None
        if len(chunk) % 4 == 0:  # the common case: no whitespace, decoded with one strict call
            try:
                data = _strict(chunk)
            except ValueError:
                data = None
        if data is not None:
            carry = b""
        else:  # whitespace (or worse): clean the piece, check it, keep the odd characters for later
            chunk = chunk.translate(None, _WHITESPACE)
            usable = len(chunk) - len(chunk) % 4
            chunk, carry = chunk[:usable], chunk[usable:]
            try:
                data = _strict(chunk)
            except ValueError:
                raise Base64Problem("base64 text has characters outside the alphabet, or misplaced padding") from None
        if (data and chunk.endswith(b"=") or carry.startswith(b"=")) and not last and bytes(
            view[start + PIECE_CHARS :]
        ).translate(None, _WHITESPACE):
            raise Base64Problem("base64 padding before the end of the text")
        if data:
            for sink in sinks:
                sink(data)
            total += len(data)
        if done is not None:
            done(start, min(start + PIECE_CHARS, end))
    if carry:
        raise Base64Problem(f"base64 text ends with {len(carry)} character(s) short of a 4-character group")
    return total


def _strict_stdlib(group: bytes) -> bytes:
    """Whole 4-character groups of the standard alphabet, padding only at the end, else ValueError."""
    if sys.version_info < (3, 11):  # no strict mode: check the alphabet first
        body = group.rstrip(b"=")
        if body.translate(None, _ALPHABET) or len(group) - len(body) > 2:
            raise ValueError("not base64")
        return binascii.a2b_base64(group)
    return binascii.a2b_base64(group, strict_mode=True)


def _strict_pybase64(group: bytes) -> bytes:
    return _pybase64.b64decode(group, validate=True)  # SIMD; raises binascii.Error (a ValueError)


try:  # optional: several times faster than binascii (about 17 ms instead of 105 for 27 MB)
    import pybase64 as _pybase64  # type: ignore[import-not-found]

    _strict = _strict_pybase64
except ImportError:  # pragma: no cover - depends on what is installed
    _strict = _strict_stdlib
