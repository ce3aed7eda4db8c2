"""Decode base64 in pieces straight into a file (or any sinks) while hashing it.

A 4K image is ~27 MB of base64; decoding it whole makes a 20 MB ``bytes`` next to the text, and
each later step (check, hash, write) walks it again. :func:`decode_into` walks the text once in
pieces of :data:`PIECE_CHARS`, so what is held at once is one piece, and hands each decoded
piece to every sink in turn (a file's ``write``, ``hashlib``'s ``update``,
:meth:`batchfuse.pngcheck.PngChecker.feed`).

It is as strict as ``base64.b64decode(..., validate=True)`` after removing whitespace: only the
standard alphabet, ``=`` padding only at the very end, and a length that is a whole number of
4-character groups; anything else raises :class:`Base64Problem` (a cut-off reply lands here).
"""

from __future__ import annotations

import binascii
from collections.abc import Callable, Iterable

#: Base64 characters decoded per step (a multiple of 4): 1 MiB of text, 768 KiB of bytes.
PIECE_CHARS = 1024 * 1024
_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_WHITESPACE = b" \t\r\n\f\v"

Sink = Callable[[bytes], object]


class Base64Problem(ValueError):
    """The text is not valid base64 (or is cut short)."""


def decode_into(text: bytes | bytearray | memoryview | str, sinks: Iterable[Sink]) -> int:
    """Decode base64 ``text`` piece by piece, giving each decoded piece to every sink in order;
    returns the number of bytes decoded. Whitespace anywhere is skipped."""
    if isinstance(text, str):
        try:
            text = text.encode("ascii")
        except UnicodeEncodeError:
            raise Base64Problem("base64 text has non-ASCII characters") from None
    view = memoryview(text).cast("B")
    sinks = list(sinks)
    carry = b""  # characters left over from the last piece (fewer than 4)
    total = 0
    end = len(view)
    for start in range(0, end, PIECE_CHARS):
        chunk = bytes(view[start : start + PIECE_CHARS])
        if chunk.translate(None, _ALPHABET):  # something other than the alphabet: whitespace or worse
            chunk = chunk.translate(None, _WHITESPACE)
            last = start + PIECE_CHARS >= end
            if not last and b"=" in chunk:  # padding here is fine if only whitespace follows
                last = not bytes(view[start + PIECE_CHARS :]).translate(None, _WHITESPACE)
            body = chunk.rstrip(b"=") if last else chunk
            if body.translate(None, _ALPHABET) or (last and len(chunk) - len(body) > 2):
                raise Base64Problem("base64 text has characters outside the alphabet, or misplaced padding")
        if carry:
            chunk = carry + chunk
        usable = len(chunk) - len(chunk) % 4
        carry = chunk[usable:]
        if usable:
            total += _emit(chunk[:usable], sinks)
    if carry:
        raise Base64Problem(f"base64 text ends with {len(carry)} character(s) short of a 4-character group")
    return total


def _emit(group: bytes, sinks: list[Sink]) -> int:
    """Decode whole 4-character groups (alphabet and padding already checked) to the sinks."""
    try:
        data = binascii.a2b_base64(group, strict_mode=True)
    except TypeError:  # Python 3.10: no strict mode; the alphabet was checked above
        data = binascii.a2b_base64(group)
    except binascii.Error as exc:
        raise Base64Problem(f"base64 text is not valid ({exc})") from None
    for sink in sinks:
        sink(data)
    return len(data)
